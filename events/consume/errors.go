package consume

import (
	"context"
	"errors"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/outage"
	"github.com/keel-commerce/keel/events/wire"
)

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that no retry can fix (a record that cannot be
// decoded, a payload that violates the schema): the runtime dead-letters
// the record at once instead of spending the remaining attempts on it.
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err is or wraps an error made by Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// Transient marks err as a failure of infrastructure rather than of the
// record (a dependency that is down, a lock timeout): the runtime rolls the
// whole batch back and retries it with backoff for as long as it takes,
// never counting it towards the record's attempts and never dead-lettering
// it. Transient(nil) is nil.
//
// The runtime already treats context cancellation, lost connections,
// serialization failures and deadlocks this way without the marker.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &transientError{err}
}

// IsTransient reports whether err is or wraps an error made by Transient.
func IsTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t)
}

// DecodeEvent decodes the envelope of a Keel event record (see package
// wire). A record that is not a Keel event comes back as a Permanent error,
// so a handler can simply return it and have the record dead-lettered:
//
//	ev, err := consume.DecodeEvent(rec)
//	if err != nil {
//		return err // dead-lettered at once, the partition moves on
//	}
func DecodeEvent(rec *kgo.Record) (envelope.Event, error) {
	ev, err := wire.Event(rec)
	if err != nil {
		return ev, Permanent(err)
	}
	return ev, nil
}

// isInfra reports whether err is a failure of the machinery around the
// record rather than of the record itself: such errors are retried for the
// whole batch, indefinitely, and never make a record poison.
func isInfra(err error) bool {
	if err == nil {
		return false
	}
	if IsTransient(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if outage.Is(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01" // serialization failure, deadlock
	}
	return errors.Is(err, fs.ErrClosed) || errors.Is(err, pgx.ErrTxClosed)
}
