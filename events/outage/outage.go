// Package outage tells a dependency that is down (PostgreSQL restarting or
// unreachable, a Kafka broker gone) from a bug. Every place that decides
// what a failure means asks it: the worker supervisor restarts a worker
// that failed for an outage instead of ending the process, the HTTP edge
// answers 503 with Retry-After instead of 500, the consumer runtime retries
// the batch instead of counting the record's attempts.
package outage

import (
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Is reports whether err is or wraps a failure to reach a dependency, or a
// dependency that refused work because it is shutting down, starting or out
// of resources: connection refused, reset or lost, PostgreSQL's connection
// exceptions (class 08), operator intervention (57P01 admin shutdown, 57P02
// crash shutdown, 57P03 cannot connect now), insufficient resources (53),
// system errors (58), a timed-out connection or pool acquire, a Kafka error
// the broker calls retriable, a record that could not be delivered in time.
// Retrying later, unchanged, can succeed. Context cancellation is not an
// outage (the caller gave up), nor is a serialization failure (retry at
// once) nor a constraint violation (a bug or a refusal).
func Is(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		c := pgErr.Code
		return strings.HasPrefix(c, "08") || c == "57P01" || c == "57P02" || c == "57P03" ||
			strings.HasPrefix(c, "53") || strings.HasPrefix(c, "58")
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	var kErr *kerr.Error
	switch {
	case errors.As(err, &connErr), errors.As(err, &netErr),
		pgconn.SafeToRetry(err), pgconn.Timeout(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, kgo.ErrRecordTimeout):
		return true
	case errors.As(err, &kErr):
		return kErr.Retriable
	}
	// pgx reports a connection that died under a query with these texts
	// only (no type to match).
	s := err.Error()
	return strings.Contains(s, "conn closed") || strings.Contains(s, "closed pool") ||
		strings.Contains(s, "unexpected EOF") || strings.Contains(s, "connection reset by peer") ||
		strings.Contains(s, "broken pipe")
}
