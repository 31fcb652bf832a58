package cartview

import (
	"context"
	"time"

	"github.com/keel-commerce/keel/projections/internal/keyset"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// Get returns a cart from the copy in schema, and whether it exists.
func Get(ctx context.Context, q readmodel.Querier, schema, cartID string) (Cart, bool, error) {
	return readmodel.Find(ctx, q, Carts, schema, cartID)
}

// Filter selects carts; zero fields do not filter.
type Filter struct {
	CustomerID string
	Status     string    // open, checking_out, closed, abandoned
	From, To   time.Time // created at From ≤ t < To
}

// List returns up to limit carts matching f (keyset.Limit bounds limit),
// newest first by creation, after the cursor, and the cursor of the next
// page (zero at the end). The indexes on (customer_id | status |
// nothing, created_at DESC, cart_id DESC) serve every filter.
func List(ctx context.Context, q readmodel.Querier, schema string, f Filter, after readmodel.Cursor, limit int) ([]Cart, readmodel.Cursor, error) {
	var w keyset.Where
	w.Eq("customer_id", f.CustomerID)
	w.Eq("status", f.Status)
	w.Range("created_at", f.From, f.To)
	return keyset.Newest(ctx, q, Carts, schema, &w, "created_at", "cart_id", after, limit,
		func(c Cart) readmodel.Cursor { return readmodel.Cursor{At: c.CreatedAt, ID: c.CartID} })
}
