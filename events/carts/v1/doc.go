// Package cartsv1 holds the carts context's events and commands, generated from
// schemas/keel/carts/v1/carts.proto (protobuf package keel.carts.v1).
//
// Do not edit the .pb.go files: change the .proto and run `make generate`.
// A message's type name on the wire (envelope Type, Kafka ce_type header) is
// its fully-qualified protobuf name, e.g. "keel.carts.v1.<Message>".
package cartsv1
