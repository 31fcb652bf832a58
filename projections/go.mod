module github.com/keel-commerce/keel/projections

go 1.26.8

require (
	github.com/jackc/pgx/v5 v5.12.0
	github.com/keel-commerce/keel/events v0.0.0-00010101000000-000000000000
	github.com/prometheus/client_golang v1.25.0
	github.com/segmentio/ksuid v1.0.4
	github.com/twmb/franz-go v1.22.3
	github.com/twmb/franz-go/pkg/kadm v1.20.0
	google.golang.org/protobuf v1.36.12
)
