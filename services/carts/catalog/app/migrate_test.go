package app_test

import (
	"testing"

	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/services/carts/catalog/app"
)

// TestReplicasStartTogether: eight migrators of the tables, as replicas
// starting together run them, all succeed on a fresh database and leave
// the schema one leaves.
func TestReplicasStartTogether(t *testing.T) {
	testenv.ConcurrentMigrations(t, 8, app.Migrate)
}
