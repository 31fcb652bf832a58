// Package domain is the catalog's Product aggregate, one per SKU: what is
// for sale and at what price. Plain struct, no I/O; command methods return
// catalog v1 events and Apply is the only place state changes.
//
//	(none) --List--> listed --ChangePrice--> listed --Delist--> delisted --List--> listed
//
// A product keeps one currency for life (a new currency is a new SKU).
package domain

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/keel-commerce/keel/events/catalog/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
)

// Sentinel errors; wrapped with detail, test with errors.Is.
var (
	// ErrInvalid reports a command with missing or malformed fields.
	ErrInvalid = errors.New("invalid catalog command")
	// ErrCurrencyMismatch reports a price in another currency than the product's.
	ErrCurrencyMismatch = errors.New("currency mismatch")
	// ErrNotListed reports a price change or delisting of a product not on sale.
	ErrNotListed = errors.New("product is not listed")
	// ErrAlreadyListed reports listing a product already on sale.
	ErrAlreadyListed = errors.New("product is already listed")
)

// Product is one SKU's state folded from its events; the zero value (or
// New) is a product never listed. Not safe for concurrent use.
type Product struct {
	sku, name string
	price     *typesv1.Money
	listed    bool
}

// New returns a product with no events; it fits command.Aggregate.New.
func New(string) *Product { return &Product{} }

// Listed reports whether the product is on sale.
func (p *Product) Listed() bool { return p.listed }

// Price returns the current unit price, nil if never listed.
func (p *Product) Price() *typesv1.Money { return p.price }

// Apply folds one event into p and returns it; unknown events are ignored.
func Apply(p *Product, event proto.Message) *Product {
	if p == nil {
		p = &Product{}
	}
	switch e := event.(type) {
	case *catalogv1.ProductListed:
		p.sku, p.name, p.price, p.listed = e.GetSku(), e.GetName(), e.GetUnitPrice(), true
	case *catalogv1.PriceChanged:
		p.price = e.GetUnitPrice()
	case *catalogv1.ProductDelisted:
		p.listed = false
	}
	return p
}

func validPrice(m *typesv1.Money) error {
	if m == nil || m.GetAmountMinor() < 0 || len(m.GetCurrency()) != 3 {
		return fmt.Errorf("%w: a non-negative price with a 3-letter currency is required", ErrInvalid)
	}
	return nil
}

// List decides ProductListed for a SKU never listed or delisted.
func (p *Product) List(sku, name string, price *typesv1.Money, now time.Time) ([]proto.Message, error) {
	if p.listed {
		return nil, ErrAlreadyListed
	}
	if sku == "" || name == "" {
		return nil, fmt.Errorf("%w: sku and name are required", ErrInvalid)
	}
	if err := validPrice(price); err != nil {
		return nil, err
	}
	if p.price != nil && p.price.GetCurrency() != price.GetCurrency() {
		return nil, fmt.Errorf("%w: %q, was %q", ErrCurrencyMismatch, price.GetCurrency(), p.price.GetCurrency())
	}
	return []proto.Message{&catalogv1.ProductListed{Sku: sku, Name: name, UnitPrice: price, ListedAt: timestamppb.New(now)}}, nil
}

// ChangePrice decides PriceChanged for a listed product; the same price is a no-op.
func (p *Product) ChangePrice(price *typesv1.Money, now time.Time) ([]proto.Message, error) {
	if !p.listed {
		return nil, ErrNotListed
	}
	if err := validPrice(price); err != nil {
		return nil, err
	}
	if price.GetCurrency() != p.price.GetCurrency() {
		return nil, fmt.Errorf("%w: %q, product in %q", ErrCurrencyMismatch, price.GetCurrency(), p.price.GetCurrency())
	}
	if price.GetAmountMinor() == p.price.GetAmountMinor() {
		return nil, nil
	}
	return []proto.Message{&catalogv1.PriceChanged{Sku: p.sku, Name: p.name, UnitPrice: price, PreviousUnitPrice: p.price, ChangedAt: timestamppb.New(now)}}, nil
}

// Delist decides ProductDelisted for a listed product.
func (p *Product) Delist(now time.Time) ([]proto.Message, error) {
	if !p.listed {
		return nil, ErrNotListed
	}
	return []proto.Message{&catalogv1.ProductDelisted{Sku: p.sku, DelistedAt: timestamppb.New(now)}}, nil
}
