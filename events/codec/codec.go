// Package codec turns Keel's event and command payloads into bytes and back.
//
// A payload travels as a pair: its type, the fully-qualified protobuf message
// name (e.g. "keel.stock.v1.StockReserved", the envelope's Type and the Kafka
// ce_type header), and its protobuf encoding. A Registry maps type names to
// the generated Go types; it is built once at start-up and passed to what
// needs it, never held in a global.
package codec

import (
	"errors"
	"fmt"
	"sort"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	catalogv1 "github.com/keel-commerce/keel/events/catalog/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
)

var (
	// ErrUnknownType means the type name is not in the registry: a payload
	// from a schema this binary was not built with, or a message that was
	// never registered. Consumers usually skip such events; nothing is wrong
	// with the bytes.
	ErrUnknownType = errors.New("unknown payload type")
	// ErrUndecodable means the bytes are not a valid encoding of the named
	// type: a poison message, to be dead-lettered, never retried.
	ErrUndecodable = errors.New("undecodable payload")
)

// Registry maps fully-qualified protobuf message names to generated Go
// message types. It is immutable once built and safe for concurrent use; the
// zero value is an empty registry that knows no types.
type Registry struct {
	types map[protoreflect.FullName]protoreflect.MessageType
}

// NewRegistry returns a registry of every top-level message declared in the
// given files, e.g. codec.NewRegistry(stockv1.File_keel_stock_v1_stock_proto).
// Each file's generated Go package must be linked into the binary, which
// importing it for its File_ variable guarantees.
func NewRegistry(files ...protoreflect.FileDescriptor) (*Registry, error) {
	r := &Registry{types: make(map[protoreflect.FullName]protoreflect.MessageType)}
	for _, fd := range files {
		if fd == nil {
			return nil, errors.New("new registry: nil file descriptor")
		}
		msgs := fd.Messages()
		for i := range msgs.Len() {
			name := msgs.Get(i).FullName()
			mt, err := protoregistry.GlobalTypes.FindMessageByName(name)
			if err != nil {
				return nil, fmt.Errorf("new registry: %s from %s: %w", name, fd.Path(), err)
			}
			r.types[name] = mt
		}
	}
	return r, nil
}

// All returns a registry of every Keel event and command schema: catalog,
// carts, stock, orders, payments and checkout. Value types that only appear
// inside payloads (keel.types.v1) are not payloads and are left out.
func All() *Registry {
	r, err := NewRegistry(
		catalogv1.File_keel_catalog_v1_catalog_proto,
		cartsv1.File_keel_carts_v1_carts_proto,
		stockv1.File_keel_stock_v1_stock_proto,
		ordersv1.File_keel_orders_v1_orders_proto,
		paymentsv1.File_keel_payments_v1_payments_proto,
		checkoutv1.File_keel_checkout_v1_checkout_proto,
	)
	if err != nil {
		// Cannot happen: every file above is linked in by its import.
		panic(err)
	}
	return r
}

// Types returns the registered type names, sorted.
func (r *Registry) Types() []string {
	names := make([]string, 0, len(r.types))
	for n := range r.types {
		names = append(names, string(n))
	}
	sort.Strings(names)
	return names
}

// New returns a new, empty message of the named type.
func (r *Registry) New(typ string) (proto.Message, error) {
	mt, ok := r.types[protoreflect.FullName(typ)]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, typ)
	}
	return mt.New().Interface(), nil
}

// Encode returns msg's type name and its deterministic protobuf encoding.
// It refuses types the registry does not hold, so nothing is written that
// this registry's readers could not decode.
func (r *Registry) Encode(msg proto.Message) (typ string, payload []byte, err error) {
	if msg == nil {
		return "", nil, errors.New("encode: nil message")
	}
	name := msg.ProtoReflect().Descriptor().FullName()
	if _, ok := r.types[name]; !ok {
		return "", nil, fmt.Errorf("encode: %w: %q", ErrUnknownType, name)
	}
	payload, err = proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return "", nil, fmt.Errorf("encode %s: %w", name, err)
	}
	return string(name), payload, nil
}

// Decode parses payload as the named type. Fields unknown to this binary's
// schema (added by a newer writer) are kept, so re-encoding loses nothing.
// Errors wrap ErrUnknownType or ErrUndecodable.
func (r *Registry) Decode(typ string, payload []byte) (proto.Message, error) {
	msg, err := r.New(typ)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := proto.Unmarshal(payload, msg); err != nil {
		return nil, fmt.Errorf("decode %s: %w: %w", typ, ErrUndecodable, err)
	}
	return msg, nil
}

// JSON decodes payload as the named type and renders it as protobuf JSON
// with the .proto field names, for tools and logs. The output's whitespace
// is not stable across protobuf releases: parse it, do not compare bytes.
func (r *Registry) JSON(typ string, payload []byte) ([]byte, error) {
	msg, err := r.Decode(typ, payload)
	if err != nil {
		return nil, err
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("json %s: %w", typ, err)
	}
	return b, nil
}
