module github.com/keel-commerce/keel/tools

go 1.26.8

require (
	github.com/google/go-cmp v0.7.0
	github.com/jackc/pgx/v5 v5.12.0
	github.com/keel-commerce/keel/events v0.0.0
	github.com/keel-commerce/keel/projections v0.0.0
	github.com/keel-commerce/keel/services/stock v0.0.0
	github.com/segmentio/ksuid v1.0.4
	github.com/twmb/franz-go v1.22.3
	github.com/twmb/franz-go/pkg/kadm v1.20.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.1 // indirect
	golang.org/x/text v0.44.0 // indirect
)

replace github.com/keel-commerce/keel/events => ../events

replace github.com/keel-commerce/keel/projections => ../projections

replace github.com/keel-commerce/keel/services/stock => ../services/stock
