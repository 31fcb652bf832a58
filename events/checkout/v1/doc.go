// Package checkoutv1 holds the checkout saga's events, generated from
// schemas/keel/checkout/v1/checkout.proto (protobuf package keel.checkout.v1).
//
// Do not edit the .pb.go files: change the .proto and run `make generate`.
// A message's type name on the wire (envelope Type, Kafka ce_type header) is
// its fully-qualified protobuf name, e.g. "keel.checkout.v1.<Message>".
package checkoutv1
