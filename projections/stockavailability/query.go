package stockavailability

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keel-commerce/keel/projections/internal/keyset"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// Total is a SKU's units summed over its warehouses.
type Total struct {
	SKU            string    `json:"sku"`
	OnHand         int64     `json:"on_hand"`
	Reserved       int64     `json:"reserved"`
	Committed      int64     `json:"committed"`
	Available      int64     `json:"available"`
	WarehouseCount int64     `json:"warehouse_count"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// SKU returns a SKU's row in every warehouse, by warehouse id, and their
// total (a zero Total with the SKU when it has no rows).
func SKU(ctx context.Context, q readmodel.Querier, schema, sku string) ([]Level, Total, error) {
	levels, err := readmodel.Query(ctx, q, Levels,
		readmodel.SelectAll(&Levels.TableDef, schema)+" WHERE sku = $1 ORDER BY warehouse_id", sku)
	t := Total{SKU: sku}
	if err != nil {
		return nil, t, err
	}
	for _, l := range levels {
		t.OnHand += l.OnHand
		t.Reserved += l.Reserved
		t.Committed += l.Committed
		t.Available += l.Available
		t.WarehouseCount++
		if l.UpdatedAt.After(t.UpdatedAt) {
			t.UpdatedAt = l.UpdatedAt
		}
	}
	return levels, t, nil
}

// Get returns one SKU's row in one warehouse, and whether it exists.
func Get(ctx context.Context, q readmodel.Querier, schema, sku, warehouseID string) (Level, bool, error) {
	return readmodel.Find(ctx, q, Levels, schema, sku, warehouseID)
}

const totalCols = `sku, sum(on_hand)::bigint, sum(reserved)::bigint, sum(committed)::bigint, sum(available)::bigint, count(*), max(updated_at)`

// Totals returns the totals of the SKUs that have rows, ordered by SKU:
// of the skus given, or, with none given, of every SKU after afterSKU, at
// most limit of them (keyset.Limit bounds limit), with the SKU to pass as
// afterSKU for the next page ("" at the end). Each is a SUM over the SKU's
// rows, read along the primary key (sku, warehouse_id).
func Totals(ctx context.Context, q readmodel.Querier, schema string, skus []string, afterSKU string, limit int) ([]Total, string, error) {
	var w keyset.Where
	if len(skus) > 0 {
		w.Add("sku = ANY(%s)", skus)
		limit = len(skus)
	} else {
		limit = keyset.Limit(limit)
		if afterSKU != "" {
			w.Add("sku > %s", afterSKU)
		}
	}
	var out []Total
	sql := fmt.Sprintf("SELECT %s FROM %s%s GROUP BY sku ORDER BY sku LIMIT %s",
		totalCols, pgx.Identifier{schema, Levels.Name}.Sanitize(), w.SQL(), w.Arg(limit+1))
	rows, err := q.Query(ctx, sql, w.Args()...)
	if err == nil {
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Total, error) {
			var t Total
			var at *time.Time
			err := r.Scan(&t.SKU, &t.OnHand, &t.Reserved, &t.Committed, &t.Available, &t.WarehouseCount, &at)
			if at != nil {
				t.UpdatedAt = at.UTC()
			}
			return t, err
		})
	}
	if err != nil {
		return nil, "", fmt.Errorf("stock totals: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].SKU
	}
	return out, next, nil
}

// Warehouse returns the rows of one warehouse ordered by SKU, after
// afterSKU, at most limit of them (keyset.Limit bounds limit), with the
// SKU to pass as afterSKU for the next page ("" at the end). The index
// (warehouse_id, sku) serves it.
func Warehouse(ctx context.Context, q readmodel.Querier, schema, warehouseID, afterSKU string, limit int) ([]Level, string, error) {
	limit = keyset.Limit(limit)
	var w keyset.Where
	w.Add("warehouse_id = %s", warehouseID)
	if afterSKU != "" {
		w.Add("sku > %s", afterSKU)
	}
	sql := readmodel.SelectAll(&Levels.TableDef, schema) + w.SQL() + " ORDER BY sku LIMIT " + w.Arg(limit+1)
	list, err := readmodel.Query(ctx, q, Levels, sql, w.Args()...)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(list) > limit {
		list = list[:limit]
		next = list[limit-1].SKU
	}
	return list, next, nil
}
