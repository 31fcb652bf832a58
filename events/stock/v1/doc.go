// Package stockv1 holds the stock context's events and commands, generated from
// schemas/keel/stock/v1/stock.proto (protobuf package keel.stock.v1).
//
// Do not edit the .pb.go files: change the .proto and run `make generate`.
// A message's type name on the wire (envelope Type, Kafka ce_type header) is
// its fully-qualified protobuf name, e.g. "keel.stock.v1.<Message>".
package stockv1
