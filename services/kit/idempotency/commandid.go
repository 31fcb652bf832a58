package idempotency

import (
	"net/http"

	"github.com/segmentio/ksuid"
)

// CommandID picks the id of the command an HTTP request carries: the
// Idempotency-Key scoped by method and path (command ids are global, and one
// key reused on two endpoints must not replay the other endpoint's answer),
// else the body's command_id as given, else a new KSUID.
func CommandID(r *http.Request, fromBody string) string {
	if k := r.Header.Get(Header); k != "" {
		return k + " " + r.Method + " " + r.URL.Path
	}
	if fromBody != "" {
		return fromBody
	}
	return ksuid.New().String()
}
