package codec_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/reflect/protoreflect"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	"github.com/keel-commerce/keel/events/codec"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
)

func TestEnumName(t *testing.T) {
	for e, want := range map[protoreflect.Enum]string{
		ordersv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK:            "out_of_stock",
		ordersv1.CancelReason_CANCEL_REASON_UNSPECIFIED:             "",
		ordersv1.CancelReason(99):                                   "",
		checkoutv1.Step_STEP_MARK_ORDER_PAID:                        "mark_order_paid",
		checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_TIMED_OUT:   "payment_timed_out",
		typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_BANK_TRANSFER: "bank_transfer",
		paymentsv1.DeclineReason_DECLINE_REASON_INSUFFICIENT_FUNDS:  "insufficient_funds",
		stockv1.ReleaseReason_RELEASE_REASON_CHECKOUT_TIMED_OUT:     "checkout_timed_out",
		cartsv1.AbandonReason_ABANDON_REASON_IDLE:                   "idle",
	} {
		if got := codec.EnumName(e); got != want {
			t.Errorf("%v: %q, want %q", e, got, want)
		}
	}
}

// Every value of every Keel enum has a lower-case name without its
// enum's prefix, and ParseEnum reads it back.
func TestEnumNamesRoundTrip(t *testing.T) {
	files := []protoreflect.FileDescriptor{cartsv1.File_keel_carts_v1_carts_proto, checkoutv1.File_keel_checkout_v1_checkout_proto,
		ordersv1.File_keel_orders_v1_orders_proto, paymentsv1.File_keel_payments_v1_payments_proto,
		stockv1.File_keel_stock_v1_stock_proto, typesv1.File_keel_types_v1_types_proto}
	n := 0
	for _, f := range files {
		for i := range f.Enums().Len() {
			d := f.Enums().Get(i)
			// buf lint: the zero value is <PREFIX>UNSPECIFIED, every value starts with <PREFIX>.
			prefix := strings.TrimSuffix(string(d.Values().ByNumber(0).Name()), "UNSPECIFIED")
			names := codec.EnumNames(d)
			if len(names) != d.Values().Len()-1 {
				t.Errorf("%s: %d names for %d values", d.FullName(), len(names), d.Values().Len())
				continue
			}
			for j, name := range names {
				n++
				if want := strings.ToLower(strings.TrimPrefix(string(d.Values().Get(j+1).Name()), prefix)); name != want {
					t.Errorf("%s: value name %q, want %q", d.FullName(), name, want)
				}
			}
		}
	}
	if n < 30 {
		t.Errorf("%d enum values named; the files hold more", n)
	}
	r, ok := codec.ParseEnum[ordersv1.CancelReason]("checkout_timed_out")
	if !ok || r != ordersv1.CancelReason_CANCEL_REASON_CHECKOUT_TIMED_OUT {
		t.Errorf("ParseEnum(checkout_timed_out) = %v, %v", r, ok)
	}
	for _, bad := range []string{"", "unspecified", "CANCEL_REASON_FRAUD", "FRAUD", "nope"} {
		if r, ok := codec.ParseEnum[ordersv1.CancelReason](bad); ok {
			t.Errorf("ParseEnum(%q) = %v, want refused", bad, r)
		}
	}
	for _, name := range codec.EnumNames(ordersv1.CancelReason(0).Descriptor()) {
		r, ok := codec.ParseEnum[ordersv1.CancelReason](name)
		if !ok || codec.EnumName(r) != name {
			t.Errorf("round trip %q: %v %v", name, r, ok)
		}
	}
	if diff := cmp.Diff([]string{"customer", "out_of_stock", "payment_failed", "checkout_timed_out", "fraud", "operator"},
		codec.EnumNames(ordersv1.CancelReason(0).Descriptor())); diff != "" {
		t.Errorf("cancel reasons (-want +got):\n%s", diff)
	}
}
