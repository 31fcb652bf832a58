// Package typesv1 holds the value types several contexts share (Money,
// Address, Customer, PaymentMethod, Totals), generated from
// schemas/keel/types/v1/types.proto (protobuf package keel.types.v1).
//
// They appear inside events and commands, never as a payload of their own.
// Do not edit the .pb.go files: change the .proto and run `make generate`.
package typesv1
