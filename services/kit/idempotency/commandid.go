package idempotency

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/segmentio/ksuid"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/services/kit/httpapi"
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

// CommandIDReused is the 422 command-id-reused problem when err is a
// command refused because its id was first used for another command (see
// command.IDReused), else nil. Every command endpoint maps its errors
// through it first: the rule is the same as an Idempotency-Key's.
func CommandIDReused(err error) *httpapi.Problem {
	var e *command.IDReused
	if !errors.As(err, &e) {
		return nil
	}
	return &httpapi.Problem{Type: httpapi.TypeCommandIDReused, Title: "Command id reused",
		Status: http.StatusUnprocessableEntity,
		Detail: fmt.Sprintf("%s (the same command again would replay its first answer)", e.Error()),
		Extensions: map[string]any{"code": command.CodeIDReused, "command_id": e.ID,
			"first_command": map[string]string{"kind": e.Kind, "target": e.Target}}}
}
