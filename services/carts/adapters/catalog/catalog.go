// Package catalog prices cart lines from the catalog's read table: it
// implements app.Catalog over a pool on the catalog's database (keel_catalog).
//
// Why a direct read and not an HTTP call to the catalog API: the catalog
// is a sub-context of carts, built and shipped from the same module, and
// catalog_products is written in the catalog command's own transaction, so
// it is the catalog's published read model, not a private table. One
// indexed SELECT on the PostgreSQL server carts already depend on is
// faster than an HTTP hop and adds no failure mode (a catalog process
// being down or slow does not stop carts from pricing). Reading another
// context's table couples carts to its schema; the coupling is confined to
// this adapter and catalog/app.Reader, both in this module, and an HTTP
// implementation of the same port can replace it if the catalog ever moves
// out.
package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/carts/app"
	catalogapp "github.com/keel-commerce/keel/services/carts/catalog/app"
	"github.com/keel-commerce/keel/services/carts/domain"
)

// Prices implements app.Catalog on the catalog's database. Safe for
// concurrent use.
type Prices struct {
	r *catalogapp.Reader
}

var _ app.Catalog = (*Prices)(nil)

// New reads prices through pool, a pool on the catalog's database.
func New(pool *pgxpool.Pool) *Prices { return &Prices{r: catalogapp.NewReader(pool)} }

// Product returns a listed SKU; unknown and delisted SKUs wrap app.ErrUnknownSKU.
func (p *Prices) Product(ctx context.Context, sku string) (domain.Product, error) {
	row, err := p.r.Product(ctx, sku)
	if errors.Is(err, catalogapp.ErrNotFound) {
		return domain.Product{}, fmt.Errorf("%w: %s is not in the catalog", app.ErrUnknownSKU, sku)
	}
	if err != nil {
		return domain.Product{}, err
	}
	if !row.Listed {
		return domain.Product{}, fmt.Errorf("%w: %s is no longer sold", app.ErrUnknownSKU, sku)
	}
	return domain.Product{SKU: row.SKU, Name: row.Name,
		UnitPrice: &typesv1.Money{AmountMinor: row.UnitPrice.AmountMinor, Currency: row.UnitPrice.Currency}}, nil
}
