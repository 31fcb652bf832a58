// Package crashtest holds the checkout saga's crash test (crash_test.go):
// the real service binaries (stock, orders, payments, checkout) and
// keel-relay, built into a temporary folder and run as processes against
// fresh databases and prefixed topics on the local stack, with the saga
// killed (SIGKILL, by its KEEL_CRASH_AT hook) at every step, compensation
// and reconciliation boundary in turn, and the stock, orders and payments
// services and their relays killed from the outside while they work, as
// many checkouts with mixed outcomes run.
//
// Some waves stage what chance would rarely produce: orders cancelled by
// the orders side while their checkout confirms and the payments service
// is down (the queued capture lands, then is refunded), and authorizations
// that charge but answer a timeout (the simulator's tok_ambiguous) after
// the saga's payment timer fired, with the payments service down past
// that timer: the saga must reconcile them and void the late charge.
//
// After the last restart every checkout must end completed or fully
// compensated, with the books of every service agreeing, and with the
// payment provider's own books (the simulator's durable file): a
// completed checkout captured once for its total, a failed one holding
// nothing at the provider and its payment not left unknown unless the saga
// gave up reconciling it, every cart closed or reopened as its checkout
// ended, stock on hand matching what left it.
//
// outage_test.go runs the same processes against a PostgreSQL server and
// a Kafka broker of its own (private_test.go: initdb into a temporary
// folder, a KRaft broker from the shared stack's jars), kills the saga
// and measures how soon its partitions move again, then stops PostgreSQL
// and the broker in turn under a running checkout flow: no process may
// exit, no answer be a 500, every 503 carry Retry-After, checkouts
// complete again within seconds of each return, and every checkout end
// with the books agreeing.
//
// The package has no code of its own; `make test` runs the tests with the
// checkout module. KEEL_CRASHTEST_CHECKOUTS sets the number of checkouts
// (default 200) for longer runs by hand; KEEL_CRASHTEST_FIRST_WAVE puts
// that many of them in the first wave, all in flight together when the
// saga first dies (e.g. 1200 checkouts with 1000 at once), the rest spread
// over the other kill points; KEEL_CRASHTEST_LOGS keeps the
// processes' logs in a folder (default: a temporary one).
package crashtest
