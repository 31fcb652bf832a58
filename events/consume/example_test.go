package consume_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/consume"
)

// A projection's main: the handler dedupes by event id and applies the
// event, both through the batch's transaction; the runtime commits the
// checkpoint in that same transaction.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))

	pool, err := pgxpool.New(ctx, os.Getenv("KEEL_PG_URL"))
	if err != nil {
		log.Error("database", "err", err)
		return
	}
	defer pool.Close()

	h := consume.HandlerFunc(func(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
		ev, err := consume.DecodeEvent(rec) // not a Keel event: dead-lettered at once
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO seen_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING`, ev.ID.String())
		if err != nil || tag.RowsAffected() == 0 {
			return err // a database error, or a duplicate already applied
		}
		_, err = tx.Exec(ctx, `UPDATE order_totals SET n = n + 1 WHERE stream = $1`, ev.StreamID)
		return err
	})
	c, err := consume.New(consume.Config{
		Brokers:    []string{"127.0.0.1:9092"},
		Group:      "projection-order-totals",
		Topics:     []string{"orders.events"},
		Pool:       pool,
		Logger:     log,
		Registerer: prometheus.DefaultRegisterer,
	}, h)
	if err != nil {
		log.Error("consumer", "err", err)
		return
	}
	if err := c.Run(ctx); err != nil { // returns nil on SIGTERM
		log.Error("consumer", "err", err)
	}
}
