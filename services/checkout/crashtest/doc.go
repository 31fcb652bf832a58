// Package crashtest holds the checkout saga's crash test (crash_test.go):
// the real service binaries (stock, orders, payments, checkout) and
// keel-relay, built into a temporary folder and run as processes against
// fresh databases and prefixed topics on the local stack, with the saga
// killed (SIGKILL, by its KEEL_CRASH_AT hook) at every step and
// compensation boundary in turn and the stock and payments services
// killed from the outside, while many checkouts with mixed outcomes run.
// After the last restart every checkout must end completed or fully
// compensated, with the books of every service agreeing.
//
// The package has no code of its own; `make test` runs the test with the
// checkout module. KEEL_CRASHTEST_CHECKOUTS sets the number of checkouts
// (default 200) for longer runs by hand; KEEL_CRASHTEST_LOGS keeps the
// processes' logs in a folder (default: a temporary one).
package crashtest
