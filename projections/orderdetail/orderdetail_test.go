package orderdetail_test

import (
	"encoding/json"
	"testing"

	"github.com/keel-commerce/keel/projections/orderdetail"
)

// The customer is written as customer_id; rows written before, under
// "id", still read.
func TestCustomerID(t *testing.T) {
	b, err := json.Marshal(orderdetail.Customer{ID: "c1", Email: "a@b.c"})
	if err != nil || string(b) != `{"customer_id":"c1","email":"a@b.c"}` {
		t.Fatalf("marshal: %s %v", b, err)
	}
	for _, doc := range []string{`{"customer_id":"c1","email":"a@b.c"}`, `{"id":"c1","email":"a@b.c"}`} {
		var c orderdetail.Customer
		if err := json.Unmarshal([]byte(doc), &c); err != nil || c != (orderdetail.Customer{ID: "c1", Email: "a@b.c"}) {
			t.Errorf("unmarshal %s: %+v %v", doc, c, err)
		}
	}
}
