package codec_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	catalogv1 "github.com/keel-commerce/keel/events/catalog/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	"github.com/keel-commerce/keel/events/codec"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
)

var at = timestamppb.New(time.Date(2025, 11, 27, 12, 0, 0, 0, time.UTC))

func eur(minor int64) *typesv1.Money { return &typesv1.Money{AmountMinor: minor, Currency: "EUR"} }

func TestRoundTrip(t *testing.T) {
	reg := codec.All()
	tests := []struct {
		want string
		msg  proto.Message
	}{
		{"keel.stock.v1.StockReserved", &stockv1.StockReserved{
			ReservationId: "r1", Sku: "SKU1", WarehouseId: "WH1", Quantity: 3,
			OrderId: "o1", CheckoutId: "c1", ExpiresAt: at, ReservedAt: at,
		}},
		{"keel.stock.v1.OrderAllocated", &stockv1.OrderAllocated{
			OrderId: "o1",
			Lines: []*stockv1.AllocatedLine{
				{Sku: "SKU1", WarehouseId: "WH1", Quantity: 2, ReservationId: "r1"},
				{Sku: "SKU1", WarehouseId: "WH2", Quantity: 1, ReservationId: "r2"},
			},
			ExpiresAt: at, AllocatedAt: at,
		}},
		{"keel.stock.v1.ReserveStock", &stockv1.ReserveStock{
			CommandId: "cmd1", OrderId: "o1",
			Lines: []*stockv1.StockLine{{Sku: "SKU1", Quantity: 3}},
			Ttl:   durationpb.New(15 * time.Minute),
		}},
		{"keel.carts.v1.CheckoutRequested", &cartsv1.CheckoutRequested{
			CartId: "cart1", CheckoutId: "c1", CartVersion: 7,
			Lines:         []*cartsv1.CartLine{{Sku: "SKU1", Name: "Mug", Quantity: 2, UnitPrice: eur(450), LineTotal: eur(900)}},
			Totals:        &typesv1.Totals{Subtotal: eur(900), Total: eur(900)},
			Customer:      &typesv1.Customer{CustomerId: "cu1", Email: "a@example.com"},
			PaymentMethod: &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok"},
			RequestedAt:   at,
		}},
		{"keel.catalog.v1.PriceChanged", &catalogv1.PriceChanged{Sku: "SKU1", UnitPrice: eur(500), PreviousUnitPrice: eur(450), ChangedAt: at}},
		{"keel.orders.v1.OrderCancelled", &ordersv1.OrderCancelled{OrderId: "o1", Reason: ordersv1.CancelReason_CANCEL_REASON_PAYMENT_FAILED, CancelledAt: at}},
		{"keel.payments.v1.AuthorizePayment", &paymentsv1.AuthorizePayment{CommandId: "cmd2", IdempotencyKey: "k", PaymentId: "p1", Amount: eur(900)}},
		{"keel.checkout.v1.CheckoutCompensating", &checkoutv1.CheckoutCompensating{
			CheckoutId: "c1", Reason: checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED,
			StepsToCompensate: []checkoutv1.Step{checkoutv1.Step_STEP_RESERVE_STOCK, checkoutv1.Step_STEP_PLACE_ORDER},
		}},
		{"keel.checkout.v1.CheckoutCompleted", &checkoutv1.CheckoutCompleted{}}, // empty payload is valid
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			typ, payload, err := reg.Encode(tt.msg)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if typ != tt.want {
				t.Errorf("Encode type = %q, want %q", typ, tt.want)
			}
			got, err := reg.Decode(typ, payload)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if diff := cmp.Diff(tt.msg, got, protocmp.Transform()); diff != "" {
				t.Errorf("Decode mismatch (-want +got):\n%s", diff)
			}
			// Deterministic: the same message always encodes to the same bytes.
			_, again, _ := reg.Encode(got)
			if string(again) != string(payload) {
				t.Errorf("re-encoding changed the bytes")
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	stockOnly, err := codec.NewRegistry(stockv1.File_keel_stock_v1_stock_proto)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		reg     *codec.Registry
		msg     proto.Message
		wantErr error
	}{
		{"type of an unregistered file", stockOnly, &ordersv1.OrderPlaced{}, codec.ErrUnknownType},
		{"value type is not a payload", codec.All(), &typesv1.Money{}, codec.ErrUnknownType},
		{"zero registry knows nothing", &codec.Registry{}, &stockv1.StockReceived{}, codec.ErrUnknownType},
		{"nil message", codec.All(), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, payload, err := tt.reg.Encode(tt.msg)
			if err == nil {
				t.Fatalf("Encode = %q, %x, nil; want error", typ, payload)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Encode error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	reg := codec.All()
	// A string field (sku, field 2 of StockReceived) holding invalid UTF-8.
	badUTF8 := protowire.AppendTag(nil, 2, protowire.BytesType)
	badUTF8 = protowire.AppendBytes(badUTF8, []byte{0xff, 0xfe})
	tests := []struct {
		name    string
		typ     string
		payload []byte
		wantErr error
	}{
		{"unknown type", "keel.stock.v9.StockReceived", nil, codec.ErrUnknownType},
		{"empty type", "", nil, codec.ErrUnknownType},
		{"value type is not a payload", "keel.types.v1.Money", nil, codec.ErrUnknownType},
		{"garbage bytes", "keel.stock.v1.StockReceived", []byte{0xff, 0xff, 0xff}, codec.ErrUndecodable},
		{"truncated length", "keel.stock.v1.StockReceived", []byte{0x0a, 0x05, 'S'}, codec.ErrUndecodable},
		{"invalid UTF-8 in string", "keel.stock.v1.StockReceived", badUTF8, codec.ErrUndecodable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := reg.Decode(tt.typ, tt.payload)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode = %v, %v; want error %v", msg, err, tt.wantErr)
			}
			other := codec.ErrUnknownType
			if tt.wantErr == codec.ErrUnknownType {
				other = codec.ErrUndecodable
			}
			if errors.Is(err, other) {
				t.Errorf("Decode error %v also matches %v", err, other)
			}
			if _, err := reg.JSON(tt.typ, tt.payload); !errors.Is(err, tt.wantErr) {
				t.Errorf("JSON error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// A newer writer may add fields; an older reader must carry them through.
func TestDecodeKeepsUnknownFields(t *testing.T) {
	reg := codec.All()
	_, payload, err := reg.Encode(&stockv1.StockReceived{Sku: "SKU1", Quantity: 4})
	if err != nil {
		t.Fatal(err)
	}
	payload = protowire.AppendTag(payload, 99, protowire.VarintType)
	payload = protowire.AppendVarint(payload, 42)
	msg, err := reg.Decode("keel.stock.v1.StockReceived", payload)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got := msg.(*stockv1.StockReceived).GetSku(); got != "SKU1" {
		t.Errorf("sku = %q", got)
	}
	again, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(payload) {
		t.Errorf("unknown field lost: got %x, want %x", again, payload)
	}
}

func TestJSON(t *testing.T) {
	reg := codec.All()
	typ, payload, err := reg.Encode(&stockv1.StockAdjusted{
		Sku: "SKU1", WarehouseId: "WH1", Delta: -2,
		Reason: stockv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED, AdjustedAt: at,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := reg.JSON(typ, payload)
	if err != nil {
		t.Fatalf("JSON: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, b)
	}
	want := map[string]any{
		"sku":          "SKU1",
		"warehouse_id": "WH1",
		"delta":        "-2", // int64 is a JSON string in the protobuf mapping
		"reason":       "ADJUSTMENT_REASON_DAMAGED",
		"adjusted_at":  "2025-11-27T12:00:00Z",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JSON mismatch (-want +got):\n%s", diff)
	}
}

func TestNewRegistry(t *testing.T) {
	if _, err := codec.NewRegistry(nil); err == nil {
		t.Error("NewRegistry(nil) succeeded")
	}
	reg, err := codec.NewRegistry(stockv1.File_keel_stock_v1_stock_proto, stockv1.File_keel_stock_v1_stock_proto)
	if err != nil {
		t.Fatalf("same file twice: %v", err)
	}
	msgs := stockv1.File_keel_stock_v1_stock_proto.Messages()
	if got, want := len(reg.Types()), msgs.Len(); got != want {
		t.Errorf("stock registry has %d types, want %d", got, want)
	}
	m, err := reg.New("keel.stock.v1.ReleaseReservation")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(*stockv1.ReleaseReservation); !ok {
		t.Errorf("New returned %T, want *stockv1.ReleaseReservation", m)
	}
}

// TestAll pins the payloads the domain needs, and the rule that every
// command carries its idempotency id as field 1.
func TestAll(t *testing.T) {
	types := codec.All().Types()
	have := map[string]bool{}
	for _, n := range types {
		have[n] = true
		if strings.HasPrefix(n, "keel.types.") || !strings.HasPrefix(n, "keel.") {
			t.Errorf("All() holds %q, not a Keel payload", n)
		}
	}
	events := []string{
		"keel.stock.v1.StockReceived", "keel.stock.v1.StockAdjusted", "keel.stock.v1.StockReserved",
		"keel.stock.v1.ReservationReleased", "keel.stock.v1.ReservationCommitted", "keel.stock.v1.ReservationExpired",
		"keel.stock.v1.OrderAllocated", "keel.stock.v1.AllocationFailed",
		"keel.carts.v1.CartCreated", "keel.carts.v1.LineAdded", "keel.carts.v1.LineQuantityChanged",
		"keel.carts.v1.LineRemoved", "keel.carts.v1.CartCleared", "keel.carts.v1.CheckoutRequested",
		"keel.carts.v1.CartAbandoned", "keel.carts.v1.CartReopened", "keel.carts.v1.CartClosed",
		"keel.catalog.v1.ProductListed", "keel.catalog.v1.PriceChanged",
		"keel.orders.v1.OrderPlaced", "keel.orders.v1.OrderConfirmed", "keel.orders.v1.OrderPaid",
		"keel.orders.v1.OrderCancelled", "keel.orders.v1.OrderShipped",
		"keel.payments.v1.PaymentAuthorized", "keel.payments.v1.PaymentDeclined",
		"keel.payments.v1.PaymentAuthorizationTimedOut", "keel.payments.v1.PaymentCaptured",
		"keel.payments.v1.PaymentVoided", "keel.payments.v1.PaymentRefunded",
		"keel.checkout.v1.CheckoutStarted", "keel.checkout.v1.CheckoutStepCompleted",
		"keel.checkout.v1.CheckoutCompleted", "keel.checkout.v1.CheckoutCompensating",
		"keel.checkout.v1.CheckoutFailed", "keel.checkout.v1.CheckoutTimedOut",
	}
	commands := []string{
		"keel.stock.v1.ReceiveStock", "keel.stock.v1.AdjustStock", "keel.stock.v1.ReserveStock",
		"keel.stock.v1.ReleaseReservation", "keel.stock.v1.CommitReservation",
		"keel.carts.v1.CreateCart", "keel.carts.v1.AddLine", "keel.carts.v1.ChangeLineQuantity",
		"keel.carts.v1.RemoveLine", "keel.carts.v1.ClearCart", "keel.carts.v1.RequestCheckout",
		"keel.carts.v1.AbandonCart", "keel.carts.v1.ReopenCart", "keel.carts.v1.CloseCart",
		"keel.catalog.v1.ListProduct", "keel.catalog.v1.ChangePrice", "keel.catalog.v1.DelistProduct",
		"keel.orders.v1.PlaceOrder", "keel.orders.v1.ConfirmOrder", "keel.orders.v1.MarkOrderPaid",
		"keel.orders.v1.CancelOrder", "keel.orders.v1.ShipOrder",
		"keel.payments.v1.AuthorizePayment", "keel.payments.v1.CapturePayment",
		"keel.payments.v1.VoidPayment", "keel.payments.v1.RefundPayment",
	}
	for _, n := range events {
		if !have[n] {
			t.Errorf("All() lacks event %s", n)
		}
	}
	reg := codec.All()
	for _, n := range commands {
		m, err := reg.New(n)
		if err != nil {
			t.Errorf("All() lacks command %s", n)
			continue
		}
		f := m.ProtoReflect().Descriptor().Fields().ByName("command_id")
		if f == nil || f.Number() != 1 || f.Kind() != protoreflect.StringKind {
			t.Errorf("command %s: want string command_id = 1", n)
		}
	}
}
