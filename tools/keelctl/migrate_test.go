package main

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keel-commerce/keel/events/testenv"
)

// TestDLQStateReplicasStartTogether: eight keelctl runs open the
// dead-letter state at once on a fresh database; all open it, and leave
// the schema one leaves.
func TestDLQStateReplicasStartTogether(t *testing.T) {
	testenv.ConcurrentMigrations(t, 8, func(ctx context.Context, pool *pgxpool.Pool) error {
		st, err := openState(ctx, &env{}, pool.Config().ConnString())
		if err != nil {
			return err
		}
		st.close()
		return nil
	})
}
