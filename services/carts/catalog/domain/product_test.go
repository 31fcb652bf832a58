package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/keel-commerce/keel/events/catalog/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/carts/catalog/domain"
)

var (
	now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ts  = timestamppb.New(now)
)

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

var (
	listed   = &catalogv1.ProductListed{Sku: "a", Name: "Apple", UnitPrice: eur(100), ListedAt: ts}
	changed  = &catalogv1.PriceChanged{Sku: "a", Name: "Apple", UnitPrice: eur(120), PreviousUnitPrice: eur(100), ChangedAt: ts}
	delisted = &catalogv1.ProductDelisted{Sku: "a", DelistedAt: ts}
	usd      = &typesv1.Money{AmountMinor: 1, Currency: "USD"}
)

type command func(p *domain.Product) ([]proto.Message, error)

func list(price *typesv1.Money) command {
	return func(p *domain.Product) ([]proto.Message, error) { return p.List("a", "Apple", price, now) }
}
func reprice(price *typesv1.Money) command {
	return func(p *domain.Product) ([]proto.Message, error) { return p.ChangePrice(price, now) }
}
func delist(p *domain.Product) ([]proto.Message, error) { return p.Delist(now) }

func TestProduct(t *testing.T) {
	tests := []struct {
		name  string
		given []proto.Message
		cmd   command
		want  []proto.Message
		err   error
	}{
		{name: "list", cmd: list(eur(100)), want: []proto.Message{listed}},
		{name: "list again after delisting", given: []proto.Message{listed, delisted}, cmd: list(eur(100)), want: []proto.Message{listed}},
		{name: "list in another currency after delisting", given: []proto.Message{listed, delisted}, cmd: list(usd), err: domain.ErrCurrencyMismatch},
		{name: "list listed", given: []proto.Message{listed}, cmd: list(eur(100)), err: domain.ErrAlreadyListed},
		{name: "list without price", cmd: list(nil), err: domain.ErrInvalid},
		{name: "list negative price", cmd: list(eur(-1)), err: domain.ErrInvalid},
		{name: "list without name", cmd: func(p *domain.Product) ([]proto.Message, error) { return p.List("a", "", eur(1), now) }, err: domain.ErrInvalid},
		{name: "change price", given: []proto.Message{listed}, cmd: reprice(eur(120)), want: []proto.Message{changed}},
		{name: "change to same price is a no-op", given: []proto.Message{listed, changed}, cmd: reprice(eur(120))},
		{name: "change price currency", given: []proto.Message{listed}, cmd: reprice(usd), err: domain.ErrCurrencyMismatch},
		{name: "change price unlisted", cmd: reprice(eur(1)), err: domain.ErrNotListed},
		{name: "change price delisted", given: []proto.Message{listed, delisted}, cmd: reprice(eur(1)), err: domain.ErrNotListed},
		{name: "delist", given: []proto.Message{listed, changed}, cmd: delist, want: []proto.Message{delisted}},
		{name: "delist unlisted", cmd: delist, err: domain.ErrNotListed},
		{name: "delist delisted", given: []proto.Message{listed, delisted}, cmd: delist, err: domain.ErrNotListed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := domain.New("catalog-a")
			for _, e := range tt.given {
				p = domain.Apply(p, e)
			}
			got, err := tt.cmd(p)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}
