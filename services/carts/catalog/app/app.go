// Package app runs the catalog's commands (list a product, change its
// price, delist it) through events/command, one stream per SKU
// ("product-<sku>"), each command decided once per command id.
//
// # Read table
//
// Carts price every added line from the catalog, so lookups must be one
// indexed read, not a fold of a stream. Every accepted command writes its
// product's row in catalog_products through Decision.Writes, in the same
// transaction as its events: the table is never behind the event store and
// needs no projector or checkpoint. The catalog is small (thousands of
// SKUs, rare writes), so the extra row per command costs nothing.
package app

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	catalogv1 "github.com/keel-commerce/keel/events/catalog/v1"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/migrate"
	"github.com/keel-commerce/keel/events/store/pg"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/carts/catalog/domain"
)

// StreamPrefix starts every product stream's id.
const StreamPrefix = "product-"

// Stream is the stream id of a SKU.
func Stream(sku string) string { return StreamPrefix + sku }

// ErrInvalid marks a command refused before anything was decided or stored.
var ErrInvalid = errors.New("invalid command")

// ErrNotFound reports a SKU that was never listed.
var ErrNotFound = errors.New("unknown sku")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Rejection codes stored with refused commands.
const (
	CodeAlreadyListed    = "already_listed"
	CodeNotListed        = "not_listed"
	CodeCurrencyMismatch = "currency_mismatch"
	CodeInvalid          = "invalid"
)

// Code is the rejection code of a domain error.
func Code(err error) string {
	switch {
	case errors.Is(err, domain.ErrAlreadyListed):
		return CodeAlreadyListed
	case errors.Is(err, domain.ErrNotListed):
		return CodeNotListed
	case errors.Is(err, domain.ErrCurrencyMismatch):
		return CodeCurrencyMismatch
	}
	return CodeInvalid
}

// MaxName is the longest product name, in characters (the HTTP edge's
// httpapi.MaxName).
const MaxName = 200

// MaxSKU is the longest SKU accepted, in bytes.
const MaxSKU = 64

// Config is the service's behaviour; the zero value uses the defaults.
type Config struct {
	// Now is the clock; default time.Now.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service executes catalog commands and answers product reads. Safe for
// concurrent use.
type Service struct {
	st  *pg.Store
	h   *command.Handler[*domain.Product]
	cfg Config
	*Reader
}

// Registry returns the catalog's payload registry.
func Registry() (*codec.Registry, error) {
	return codec.NewRegistry(catalogv1.File_keel_catalog_v1_catalog_proto)
}

// Aggregate wires domain.Product into the command handler.
func Aggregate() command.Aggregate[*domain.Product] {
	return command.Aggregate[*domain.Product]{New: domain.New, Apply: domain.Apply}
}

// VersionTable is the goose version table of the catalog's migrations
// (catalog_products), so they evolve apart from the event store's.
const VersionTable = "goose_catalog_version"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or upgrades the catalog's read table; replicas starting
// together are serialized by migrate's session lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate.UpDir(ctx, pool, migrations, "migrations", VersionTable)
}

// New migrates the read table and creates the command handler on st.
func New(ctx context.Context, st *pg.Store, cfg Config) (*Service, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	reg, err := Registry()
	if err != nil {
		return nil, err
	}
	if err := Migrate(ctx, st.Pool()); err != nil {
		return nil, err
	}
	h, err := command.New(ctx, st, reg, Aggregate(), command.Options{Name: "catalog", Logger: cfg.Logger, Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	return &Service{st: st, h: h, cfg: cfg, Reader: NewReader(st.Pool())}, nil
}

// Close refuses new commands and waits for the accepted ones.
func (s *Service) Close() { s.h.Close() }

// Pool is the catalog's database.
func (s *Service) Pool() *pgxpool.Pool { return s.st.Pool() }

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

func (m Money) proto() *typesv1.Money {
	return &typesv1.Money{AmountMinor: m.AmountMinor, Currency: m.Currency}
}

// List puts a product on sale (again).
type List struct {
	CommandID, SKU, Name string
	UnitPrice            Money
}

// ChangePrice sets a listed product's unit price.
type ChangePrice struct {
	CommandID, SKU string
	UnitPrice      Money
}

// Delist takes a product off sale.
type Delist struct {
	CommandID, SKU string
}

func checkSKU(sku string) error {
	switch {
	case sku == "":
		return invalid("sku is required")
	case len(sku) > MaxSKU:
		return invalid("sku is longer than %d bytes", MaxSKU)
	case strings.ContainsAny(sku, "/?# \t\r\n"):
		return invalid("sku must not contain '/', '?', '#' or whitespace")
	}
	return nil
}

func checkMoney(m Money) error {
	switch {
	case m.AmountMinor < 0:
		return invalid("unit_price.amount_minor must not be negative")
	case len(m.Currency) != 3 || strings.ToUpper(m.Currency) != m.Currency:
		return invalid("unit_price.currency must be a 3-letter upper-case ISO 4217 code")
	}
	return nil
}

// execute runs decide on sku's product and keeps its catalog_products row
// in the same transaction; kind and input (the command as asked) are its
// fingerprint with sku.
func (s *Service) execute(ctx context.Context, id, sku, kind string, input any, decide func(*domain.Product) ([]proto.Message, error)) (command.Result, error) {
	if id == "" {
		return command.Result{}, invalid("command id is required")
	}
	return s.h.Execute(ctx, command.Command[*domain.Product]{ID: id, Streams: []string{Stream(sku)},
		Fingerprint: command.Fingerprint{Kind: kind, Target: sku, Input: input},
		Decide: func(states map[string]*domain.Product) (command.Decision, error) {
			evs, err := decide(states[Stream(sku)])
			if err != nil {
				return command.Decision{}, command.Reject(Code(err), err)
			}
			return command.Decision{Events: map[string][]proto.Message{Stream(sku): evs},
				Writes: func(ctx context.Context, tx pgx.Tx) error { return writeRows(ctx, tx, evs) }}, nil
		}})
}

// writeRows applies a command's events to catalog_products.
func writeRows(ctx context.Context, tx pgx.Tx, evs []proto.Message) error {
	for _, e := range evs {
		var err error
		switch m := e.(type) {
		case *catalogv1.ProductListed:
			_, err = tx.Exec(ctx, `INSERT INTO catalog_products (sku, name, amount_minor, currency, listed, updated_at)
VALUES ($1, $2, $3, $4, true, $5)
ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, amount_minor = EXCLUDED.amount_minor,
  currency = EXCLUDED.currency, listed = true, updated_at = EXCLUDED.updated_at`,
				m.GetSku(), m.GetName(), m.GetUnitPrice().GetAmountMinor(), m.GetUnitPrice().GetCurrency(), m.GetListedAt().AsTime())
		case *catalogv1.PriceChanged:
			_, err = tx.Exec(ctx, `UPDATE catalog_products SET amount_minor = $2, currency = $3, updated_at = $4 WHERE sku = $1`,
				m.GetSku(), m.GetUnitPrice().GetAmountMinor(), m.GetUnitPrice().GetCurrency(), m.GetChangedAt().AsTime())
		case *catalogv1.ProductDelisted:
			_, err = tx.Exec(ctx, `UPDATE catalog_products SET listed = false, updated_at = $2 WHERE sku = $1`,
				m.GetSku(), m.GetDelistedAt().AsTime())
		}
		if err != nil {
			return fmt.Errorf("catalog_products: %w", err)
		}
	}
	return nil
}

// List runs a ListProduct command.
func (s *Service) List(ctx context.Context, c List) (command.Result, error) {
	if err := checkSKU(c.SKU); err != nil {
		return command.Result{}, err
	}
	if c.Name == "" || utf8.RuneCountInString(c.Name) > MaxName {
		return command.Result{}, invalid("name is required, at most %d characters", MaxName)
	}
	if err := checkMoney(c.UnitPrice); err != nil {
		return command.Result{}, err
	}
	now := s.cfg.Now()
	return s.execute(ctx, c.CommandID, c.SKU, "ListProduct", c, func(p *domain.Product) ([]proto.Message, error) {
		return p.List(c.SKU, c.Name, c.UnitPrice.proto(), now)
	})
}

// ChangePrice runs a ChangePrice command.
func (s *Service) ChangePrice(ctx context.Context, c ChangePrice) (command.Result, error) {
	if err := checkSKU(c.SKU); err != nil {
		return command.Result{}, err
	}
	if err := checkMoney(c.UnitPrice); err != nil {
		return command.Result{}, err
	}
	now := s.cfg.Now()
	return s.execute(ctx, c.CommandID, c.SKU, "ChangePrice", c, func(p *domain.Product) ([]proto.Message, error) {
		return p.ChangePrice(c.UnitPrice.proto(), now)
	})
}

// Delist runs a DelistProduct command.
func (s *Service) Delist(ctx context.Context, c Delist) (command.Result, error) {
	if err := checkSKU(c.SKU); err != nil {
		return command.Result{}, err
	}
	now := s.cfg.Now()
	return s.execute(ctx, c.CommandID, c.SKU, "DelistProduct", c, func(p *domain.Product) ([]proto.Message, error) {
		return p.Delist(now)
	})
}

// Product is a row of the read table.
type Product struct {
	SKU       string    `json:"sku"`
	Name      string    `json:"name"`
	UnitPrice Money     `json:"unit_price"`
	Listed    bool      `json:"listed"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Reader answers product reads from catalog_products. Carts use one on a
// pool of the catalog's database for price lookups. Safe for concurrent use.
type Reader struct {
	pool *pgxpool.Pool
}

// NewReader reads catalog_products through pool; it creates nothing (the
// catalog service owns the table).
func NewReader(pool *pgxpool.Pool) *Reader { return &Reader{pool: pool} }

// Product returns sku's row (listed or not), or ErrNotFound.
func (r *Reader) Product(ctx context.Context, sku string) (Product, error) {
	var p Product
	err := r.pool.QueryRow(ctx, `SELECT sku, name, amount_minor, currency, listed, updated_at
FROM catalog_products WHERE sku = $1`, sku).Scan(&p.SKU, &p.Name, &p.UnitPrice.AmountMinor, &p.UnitPrice.Currency, &p.Listed, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Product{}, fmt.Errorf("%w: %s", ErrNotFound, sku)
	}
	if err != nil {
		return Product{}, fmt.Errorf("read product %s: %w", sku, err)
	}
	p.UpdatedAt = p.UpdatedAt.UTC()
	return p, nil
}

// MaxPage is the most products one Products call returns.
const MaxPage = 1000

// Products returns up to limit listed products (1..MaxPage, default 100)
// with SKUs after `after`, in SKU order: pass the last SKU of a page to get
// the next.
func (r *Reader) Products(ctx context.Context, after string, limit int) ([]Product, error) {
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxPage)
	rows, err := r.pool.Query(ctx, `SELECT sku, name, amount_minor, currency, listed, updated_at
FROM catalog_products WHERE listed AND sku > $1 ORDER BY sku LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	defer rows.Close()
	out := []Product{}
	for rows.Next() {
		var p Product
		if err := rows.Scan(&p.SKU, &p.Name, &p.UnitPrice.AmountMinor, &p.UnitPrice.Currency, &p.Listed, &p.UpdatedAt); err != nil {
			return nil, fmt.Errorf("list products: %w", err)
		}
		p.UpdatedAt = p.UpdatedAt.UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}
