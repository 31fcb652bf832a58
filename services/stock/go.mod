module github.com/keel-commerce/keel/services/stock

go 1.26.8

require (
	github.com/keel-commerce/keel/events v0.0.0-00010101000000-000000000000
	google.golang.org/protobuf v1.36.12
)
