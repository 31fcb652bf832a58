// Package pipeline holds the end-to-end test of the string rule and the
// widest numbers (pipeline_test.go): the real binaries of every service,
// their relays and keel-projections, run against fresh databases and
// prefixed topics on the local stack; the longest values each service
// accepts, in mixed scripts and emoji, and the largest quantities and
// amounts go in as HTTP commands and must come out of every read model
// through the query API. Whatever a service accepts, every consumer
// downstream must store (DESIGN invariant 10). The package has no code of
// its own.
package pipeline
