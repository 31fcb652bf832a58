// Package catalogv1 holds the catalog context's events and commands, generated from
// schemas/keel/catalog/v1/catalog.proto (protobuf package keel.catalog.v1).
//
// Do not edit the .pb.go files: change the .proto and run `make generate`.
// A message's type name on the wire (envelope Type, Kafka ce_type header) is
// its fully-qualified protobuf name, e.g. "keel.catalog.v1.<Message>".
package catalogv1
