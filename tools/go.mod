module github.com/keel-commerce/keel/tools

go 1.26.8

require (
	github.com/google/go-cmp v0.7.0
	github.com/keel-commerce/keel/events v0.0.0
)

replace github.com/keel-commerce/keel/events => ../events
