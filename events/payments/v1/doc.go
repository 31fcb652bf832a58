// Package paymentsv1 holds the payments context's events and commands, generated from
// schemas/keel/payments/v1/payments.proto (protobuf package keel.payments.v1).
//
// Do not edit the .pb.go files: change the .proto and run `make generate`.
// A message's type name on the wire (envelope Type, Kafka ce_type header) is
// its fully-qualified protobuf name, e.g. "keel.payments.v1.<Message>".
package paymentsv1
