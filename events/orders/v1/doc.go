// Package ordersv1 holds the orders context's events and commands, generated from
// schemas/keel/orders/v1/orders.proto (protobuf package keel.orders.v1).
//
// Do not edit the .pb.go files: change the .proto and run `make generate`.
// A message's type name on the wire (envelope Type, Kafka ce_type header) is
// its fully-qualified protobuf name, e.g. "keel.orders.v1.<Message>".
package ordersv1
