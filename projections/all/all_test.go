package all

import "testing"

// Every projection is listed once, under a name the machinery accepts.
func TestAll(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range All() {
		if seen[p.Name()] {
			t.Errorf("projection %s listed twice", p.Name())
		}
		seen[p.Name()] = true
		if len(p.Sources()) == 0 || len(p.Tables()) == 0 {
			t.Errorf("projection %s: sources %v, %d tables", p.Name(), p.Sources(), len(p.Tables()))
		}
	}
	for _, want := range []string{"analytics", "cart_view", "checkout_status", "order_detail", "order_history", "stock_availability"} {
		if !seen[want] {
			t.Errorf("%s is not in All", want)
		}
	}
}
