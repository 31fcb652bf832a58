package analytics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keel-commerce/keel/projections/internal/keyset"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// MaxRange is the longest hour range one query reads.
const MaxRange = 366 * 24 * time.Hour

// ErrRange is returned for a missing, reversed or too long hour range.
var ErrRange = errors.New("analytics: give a time range from < to of at most 366 days")

// SKUHour is a SKU's sales in one hour and currency: sums over the
// orders' rows.
type SKUHour struct {
	SKU                   string    `json:"sku"`
	Hour                  time.Time `json:"hour"`
	Currency              string    `json:"currency"`
	UnitsSold             int64     `json:"units_sold"`
	RevenueMinor          int64     `json:"revenue_minor"`
	UnitsCancelled        int64     `json:"units_cancelled"`
	RevenueCancelledMinor int64     `json:"revenue_cancelled_minor"`
	// Orders is how many orders were confirmed or cancelled in the hour
	// with this SKU.
	Orders int64 `json:"orders"`
}

// SalesFilter selects sales: an hour range (required) and optionally one
// SKU.
type SalesFilter struct {
	SKU      string
	From, To time.Time // hours From ≤ h < To
}

// SalesCursor is the position after the last row of a page of SKUHourly.
type SalesCursor struct {
	Hour          time.Time
	SKU, Currency string
}

// String encodes c for clients ("" for the zero cursor).
func (c SalesCursor) String() string {
	if c.SKU == "" {
		return ""
	}
	return readmodel.Cursor{At: c.Hour, ID: c.Currency + ":" + c.SKU}.String()
}

// ParseSalesCursor decodes a cursor made by String; "" is the zero cursor.
func ParseSalesCursor(s string) (SalesCursor, error) {
	c, err := readmodel.ParseCursor(s)
	if err != nil || s == "" {
		return SalesCursor{}, err
	}
	cur, sku, ok := strings.Cut(c.ID, ":")
	if !ok || sku == "" {
		return SalesCursor{}, readmodel.ErrBadCursor
	}
	return SalesCursor{Hour: c.At, SKU: sku, Currency: cur}, nil
}

func checkRange(from, to time.Time) error {
	if from.IsZero() || to.IsZero() || !from.Before(to) || to.Sub(from) > MaxRange {
		return ErrRange
	}
	return nil
}

func table(def *readmodel.TableDef, schema string) string {
	return pgx.Identifier{schema, def.Name}.Sanitize()
}

// SKUHourly returns units and revenue per SKU per hour (and currency) in
// f's range, ordered by hour, SKU and currency, after the cursor, at most
// limit rows (keyset.Limit bounds limit), and the cursor of the next page
// (zero at the end). With a SKU the primary key (sku, hour, order_id)
// serves it; without, the index (hour, sku).
func SKUHourly(ctx context.Context, q readmodel.Querier, schema string, f SalesFilter, after SalesCursor, limit int) ([]SKUHour, SalesCursor, error) {
	if err := checkRange(f.From, f.To); err != nil {
		return nil, SalesCursor{}, err
	}
	limit = keyset.Limit(limit)
	var w keyset.Where
	w.Eq("sku", f.SKU)
	w.Range("hour", f.From, f.To)
	if after.SKU != "" {
		w.Add("(hour, sku, currency) > (%s, %s, %s)", after.Hour, after.SKU, after.Currency)
	}
	sql := fmt.Sprintf(`SELECT sku, hour, currency, sum(units_sold)::bigint, sum(revenue_minor)::bigint,
sum(units_cancelled)::bigint, sum(revenue_cancelled_minor)::bigint, count(*) FROM %s%s
GROUP BY hour, sku, currency ORDER BY hour, sku, currency LIMIT %s`, table(&Sales.TableDef, schema), w.SQL(), w.Arg(limit+1))
	out, err := collect(ctx, q, sql, w.Args(), func(r pgx.CollectableRow) (SKUHour, error) {
		var s SKUHour
		err := r.Scan(&s.SKU, &s.Hour, &s.Currency, &s.UnitsSold, &s.RevenueMinor, &s.UnitsCancelled, &s.RevenueCancelledMinor, &s.Orders)
		s.Hour = s.Hour.UTC()
		return s, err
	})
	if err != nil {
		return nil, SalesCursor{}, fmt.Errorf("sku sales: %w", err)
	}
	var next SalesCursor
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = SalesCursor{Hour: last.Hour, SKU: last.SKU, Currency: last.Currency}
	}
	return out, next, nil
}

// SKUTotal is a SKU's sales over a time range in one currency.
type SKUTotal struct {
	SKU                   string `json:"sku"`
	Currency              string `json:"currency"`
	UnitsSold             int64  `json:"units_sold"`
	RevenueMinor          int64  `json:"revenue_minor"`
	UnitsCancelled        int64  `json:"units_cancelled"`
	RevenueCancelledMinor int64  `json:"revenue_cancelled_minor"`
}

// TopSKUs returns the limit SKUs (keyset.Limit bounds limit) that sold
// the most units net of cancellations in hours from ≤ h < to, most first
// (ties by SKU).
func TopSKUs(ctx context.Context, q readmodel.Querier, schema string, from, to time.Time, limit int) ([]SKUTotal, error) {
	if err := checkRange(from, to); err != nil {
		return nil, err
	}
	var w keyset.Where
	w.Range("hour", from, to)
	sql := fmt.Sprintf(`SELECT sku, currency, sum(units_sold)::bigint, sum(revenue_minor)::bigint,
sum(units_cancelled)::bigint, sum(revenue_cancelled_minor)::bigint FROM %s%s
GROUP BY sku, currency ORDER BY sum(units_sold) - sum(units_cancelled) DESC, sku, currency LIMIT %s`, table(&Sales.TableDef, schema), w.SQL(), w.Arg(keyset.Limit(limit)))
	out, err := collect(ctx, q, sql, w.Args(), func(r pgx.CollectableRow) (SKUTotal, error) {
		var s SKUTotal
		return s, r.Scan(&s.SKU, &s.Currency, &s.UnitsSold, &s.RevenueMinor, &s.UnitsCancelled, &s.RevenueCancelledMinor)
	})
	if err != nil {
		return nil, fmt.Errorf("top skus: %w", err)
	}
	return out, nil
}

// FunnelHour is the checkout funnel of one hour.
type FunnelHour struct {
	Hour               time.Time `json:"hour"`
	CartsCreated       int64     `json:"carts_created"`
	CheckoutsRequested int64     `json:"checkouts_requested"`
	Completed          int64     `json:"completed"`
	Failed             int64     `json:"failed"`
	// FailedByReason counts the failed checkouts by reason
	// ("out_of_stock", "payment_declined", "payment_timed_out",
	// "order_rejected", "timed_out").
	FailedByReason map[string]int64 `json:"failed_by_reason"`
}

// Funnel returns the funnel of every hour from ≤ h < to that has any
// activity, in hour order: COUNTs over the funnel facts, along their
// primary key (hour, stage, subject_id).
func Funnel(ctx context.Context, q readmodel.Querier, schema string, from, to time.Time) ([]FunnelHour, error) {
	if err := checkRange(from, to); err != nil {
		return nil, err
	}
	var w keyset.Where
	w.Range("hour", from, to)
	type count struct {
		hour          time.Time
		stage, reason string
		n             int64
	}
	sql := fmt.Sprintf(`SELECT hour, stage, reason, count(*) FROM %s%s GROUP BY hour, stage, reason ORDER BY hour, stage, reason`,
		table(&FunnelFacts.TableDef, schema), w.SQL())
	counts, err := collect(ctx, q, sql, w.Args(), func(r pgx.CollectableRow) (count, error) {
		var c count
		return c, r.Scan(&c.hour, &c.stage, &c.reason, &c.n)
	})
	if err != nil {
		return nil, fmt.Errorf("funnel: %w", err)
	}
	var out []FunnelHour
	for _, c := range counts {
		if len(out) == 0 || !out[len(out)-1].Hour.Equal(c.hour) {
			out = append(out, FunnelHour{Hour: c.hour.UTC(), FailedByReason: map[string]int64{}})
		}
		h := &out[len(out)-1]
		switch c.stage {
		case StageCartCreated:
			h.CartsCreated += c.n
		case StageCheckoutRequested:
			h.CheckoutsRequested += c.n
		case StageCheckoutCompleted:
			h.Completed += c.n
		case StageCheckoutFailed:
			h.Failed += c.n
			h.FailedByReason[c.reason] += c.n
		}
	}
	return out, nil
}

// collect runs sql and scans every row with scan.
func collect[T any](ctx context.Context, q readmodel.Querier, sql string, args []any, scan func(pgx.CollectableRow) (T, error)) ([]T, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scan)
}
