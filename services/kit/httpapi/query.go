package httpapi

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
)

// EmptyParams returns a 400 naming every query parameter of r sent with an
// empty value ("?wait="), or nil. Taking such a value as absent would let
// the server accept what its document forbids: each documented parameter
// has a type, pattern or enum that "" does not meet.
func EmptyParams(r *http.Request) *Problem {
	var errs []FieldError
	q := r.URL.Query()
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if slices.Contains(q[name], "") {
			errs = append(errs, FieldError{Field: name, Message: "must not be empty; leave the parameter out instead"})
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return BadRequest(fmt.Sprintf("query parameter %q is empty; leave it out or give it a value", errs[0].Field), errs...)
}
