package checkoutstatus

import (
	"context"
	"time"

	"github.com/keel-commerce/keel/projections/internal/keyset"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// Get returns a checkout from the copy in schema, and whether it exists.
func Get(ctx context.Context, q readmodel.Querier, schema, checkoutID string) (Checkout, bool, error) {
	return readmodel.Find(ctx, q, Checkouts, schema, checkoutID)
}

// Filter selects checkouts; zero fields do not filter.
type Filter struct {
	CustomerID string
	CartID     string
	Status     string    // running, compensating, completed, failed, timed_out
	From, To   time.Time // started at From ≤ t < To
}

// List returns up to limit checkouts matching f (keyset.Limit bounds
// limit), newest first by start, after the cursor, and the cursor of the
// next page (zero at the end). The indexes on (customer_id | status |
// cart_id | nothing, started_at DESC, …) serve every filter.
func List(ctx context.Context, q readmodel.Querier, schema string, f Filter, after readmodel.Cursor, limit int) ([]Checkout, readmodel.Cursor, error) {
	var w keyset.Where
	w.Eq("customer_id", f.CustomerID)
	w.Eq("cart_id", f.CartID)
	w.Eq("status", f.Status)
	w.Range("started_at", f.From, f.To)
	return keyset.Newest(ctx, q, Checkouts, schema, &w, "started_at", "checkout_id", after, limit,
		func(c Checkout) readmodel.Cursor { return readmodel.Cursor{At: c.StartedAt, ID: c.CheckoutID} })
}
