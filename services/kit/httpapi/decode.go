package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DefaultMaxBody is the body limit Decode applies: commands are small, and
// a limit keeps one client from holding a handler's memory.
const DefaultMaxBody int64 = 64 << 10

// Validator is implemented by request types that check their own values
// after decoding. Validate returns every problem it finds (not only the
// first), so the client fixes them in one round trip; nil or empty means
// valid. It must not do I/O: it checks shape, not state.
type Validator interface {
	Validate() []FieldError
}

// Decoder decodes JSON request bodies strictly. The zero value uses
// DefaultMaxBody; it is safe for concurrent use.
type Decoder struct {
	// MaxBytes limits the body; 0 means DefaultMaxBody.
	MaxBytes int64
}

// Decode decodes r's body into dst with the default Decoder; see
// Decoder.Decode.
func Decode(w http.ResponseWriter, r *http.Request, dst any) *Problem {
	return Decoder{}.Decode(w, r, dst)
}

// Decode reads r's body as exactly one JSON value into dst (a pointer) and,
// if dst is a Validator, validates it. It returns nil on success, or the
// problem to send (it writes nothing itself):
//
//   - 415 if Content-Type is not application/json (a charset, if given,
//     must be utf-8);
//   - 413 if the body exceeds MaxBytes;
//   - 400 if the body is empty or null, is not valid UTF-8 or valid JSON
//     (with the byte offset), has a field dst does not know, has a value
//     of the wrong type (naming the field and the expected type), has a
//     null member or element anywhere, or has data after the value;
//   - 422 listing every string anywhere in the body that breaks the
//     free-text rule (a control character; see TextPattern), by its JSON
//     path, and every other field error Validate returns.
//
// Decode returns *Problem, not error, so a nil result is never a typed nil
// hiding in an error interface.
func (d Decoder) Decode(w http.ResponseWriter, r *http.Request, dst any) *Problem {
	if p := checkContentType(r.Header.Get("Content-Type")); p != nil {
		return p
	}
	limit := d.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	if r.Body == nil {
		return BadRequest("the request body is empty; send a JSON object")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &Problem{Type: TypeTooLarge, Title: "Request body too large", Status: http.StatusRequestEntityTooLarge,
				Detail:     fmt.Sprintf("the request body exceeds the limit of %d bytes%s", mbe.Limit, sizeName(mbe.Limit)),
				Extensions: map[string]any{"max_bytes": mbe.Limit}}
		}
		return BadRequest(fmt.Sprintf("could not read the request body: %v", err))
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return BadRequest("the request body is empty; send a JSON object")
	}
	if bytes.Equal(trimmed, []byte("null")) {
		return BadRequest("the request body is null; send a JSON object")
	}
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD.
	if !utf8.Valid(body) {
		at := 0
		for at < len(body) {
			r, n := utf8.DecodeRune(body[at:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			at += n
		}
		return BadRequest(fmt.Sprintf("the request body is not valid UTF-8 (byte offset %d); send JSON encoded as UTF-8", at))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeProblem(err, body)
	}
	// Exactly one value: anything but whitespace after it is an error, so
	// `{"a":1}{"a":2}` or `{"a":1} x` is refused rather than half-read.
	if off := dec.InputOffset(); len(bytes.Trim(body[off:], " \t\r\n")) > 0 { // JSON whitespace only: TrimSpace would pass \v
		rest := bytes.TrimLeft(body[off:], " \t\r\n")
		at := int64(len(body) - len(rest))
		return BadRequest(fmt.Sprintf("unexpected data after the JSON value at byte offset %d (%s); send exactly one JSON object", at, quoteSnippet(rest)))
	}
	// One generic parse of the body serves the checks below that dst's
	// type cannot make: nulls, the text rule and miscased member names.
	var raw any
	if err := json.Unmarshal(body, &raw); err != nil {
		return decodeProblem(err, body) // cannot happen: dst decoded the same bytes
	}
	null, errs := inspect(raw)
	// encoding/json takes null as "leave the field as it is", so a null
	// would pass as an empty or absent value the documents do not allow
	// (they never say nullable): refuse it like any other wrong type.
	if null != nil {
		return BadRequest(fmt.Sprintf("field %q is null; send a value, or leave the field out if it is optional", *null),
			FieldError{Field: *null, Message: "must not be null"})
	}
	// encoding/json matches member names case-insensitively, so "wArehouse"
	// would fill "warehouse" although no document names it: refuse it as
	// the unknown field it is.
	if got, want, ok := miscased(raw, reflect.TypeOf(dst)); ok {
		return BadRequest(fmt.Sprintf("unknown field %q; the endpoint does not accept it (names are case-sensitive: %q)", got, want),
			FieldError{Field: got, Message: "unknown field"})
	}
	if v, ok := dst.(Validator); ok {
		seen := make(map[string]bool, len(errs))
		for _, e := range errs {
			seen[e.Field] = true
		}
		for _, e := range v.Validate() {
			if !seen[e.Field] { // one error per field: the text rule's says enough
				errs = append(errs, e)
			}
		}
	}
	if len(errs) > 0 {
		return Invalid(errs)
	}
	return nil
}

// inspect walks v (the body, parsed generically) once, so no request type can
// forget a field: it returns where the first null member or element is,
// named as encoding/json names fields in its errors (object keys joined by
// dots, array indexes left out: "lines.qty"), and every string, keys
// included, that breaks the free-text rule (see TextPattern), by its full
// path ("lines.1.note").
func inspect(v any) (null *string, errs []FieldError) {
	var text FieldErrors
	var walk func(path, field string, v any)
	walk = func(path, field string, v any) {
		switch v := v.(type) {
		case nil:
			if null == nil {
				null = &field
			}
		case string:
			if f := textFault(v); f != "" {
				text.Add(path, "%s", f)
			}
		case []any:
			for i, e := range v {
				walk(join(path, strconv.Itoa(i)), field, e)
			}
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys) // a stable order of errors
			for _, k := range keys {
				if f := textFault(k); f != "" {
					text.Add(join(path, k), "the field name %s", f)
					continue
				}
				walk(join(path, k), join(field, k), v[k])
			}
		}
	}
	walk("", "", v)
	return null, text
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func checkContentType(ct string) *Problem {
	p := &Problem{Type: TypeUnsupportedMediaType, Title: "Unsupported media type", Status: http.StatusUnsupportedMediaType}
	if ct == "" {
		p.Detail = "the Content-Type header is missing; send application/json"
		return p
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		p.Detail = fmt.Sprintf("the Content-Type header %q does not parse (%v); send application/json", ct, err)
		return p
	}
	if mt != "application/json" {
		p.Detail = fmt.Sprintf("Content-Type %q is not supported; send application/json", mt)
		return p
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		p.Detail = fmt.Sprintf("charset %q is not supported; send application/json encoded as utf-8", cs)
		return p
	}
	return nil
}

// decodeProblem turns an encoding/json error into a 400 that says where and
// what, in the client's terms (JSON names and types, not Go ones).
func decodeProblem(err error, body []byte) *Problem {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return BadRequest(fmt.Sprintf("malformed JSON at byte offset %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: ")))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return BadRequest(fmt.Sprintf("malformed JSON: the body ends at byte offset %d before the JSON value is complete", len(body)))
	case errors.As(err, &te):
		want := jsonTypeName(te.Type)
		if te.Field == "" {
			return BadRequest(fmt.Sprintf("the request body must be %s, got %s", want, te.Value),
				FieldError{Field: "", Message: fmt.Sprintf("must be %s, got %s", want, te.Value)})
		}
		return BadRequest(fmt.Sprintf("field %q must be %s, got %s (byte offset %d)", te.Field, want, te.Value, te.Offset),
			FieldError{Field: te.Field, Message: fmt.Sprintf("must be %s, got %s", want, te.Value)})
	}
	// encoding/json reports unknown fields only as text: `json: unknown field "x"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field := strings.Trim(name, `"`)
		return BadRequest(fmt.Sprintf("unknown field %q; the endpoint does not accept it (check the spelling and the API version)", field),
			FieldError{Field: field, Message: "unknown field"})
	}
	return BadRequest(fmt.Sprintf("the body is not valid for this endpoint: %s", strings.TrimPrefix(err.Error(), "json: ")))
}

// jsonTypeName names a Go type the way a JSON client thinks of it.
func jsonTypeName(t reflect.Type) string {
	if t == nil {
		return "a different type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return fmt.Sprintf("an integer (%s)", t.Kind())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("a non-negative integer (%s)", t.Kind())
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a " + t.String()
}

// sizeName spells a round limit in KiB or MiB, for the 413 detail.
func sizeName(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf(" (%d MiB)", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf(" (%d KiB)", n>>10)
	}
	return ""
}

func quoteSnippet(b []byte) string {
	const max = 20
	if len(b) > max {
		return fmt.Sprintf("%q…", b[:max])
	}
	return fmt.Sprintf("%q", b)
}

// miscased finds a member name of v that matches a field of t only when
// case is ignored (how encoding/json matches), with the name it stands
// for.
func miscased(v any, t reflect.Type) (got, want string, found bool) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "", "", false
	}
	switch v := v.(type) {
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for _, e := range v {
				if g, w, ok := miscased(e, t.Elem()); ok {
					return g, w, ok
				}
			}
		}
	case map[string]any:
		switch t.Kind() {
		case reflect.Map:
			for _, e := range v {
				if g, w, ok := miscased(e, t.Elem()); ok {
					return g, w, ok
				}
			}
		case reflect.Struct:
			fields := jsonFields(t, nil)
			for k, e := range v {
				if ft, ok := fields[k]; ok {
					if g, w, ok := miscased(e, ft); ok {
						return g, w, ok
					}
					continue
				}
				for name := range fields {
					if strings.EqualFold(name, k) {
						return k, name, true
					}
				}
			}
		}
	}
	return "", "", false
}

// jsonFields maps the JSON member names of struct t (embedded structs'
// promoted, as encoding/json does) to their types.
func jsonFields(t reflect.Type, into map[string]reflect.Type) map[string]reflect.Type {
	if into == nil {
		into = map[string]reflect.Type{}
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				jsonFields(ft, into)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		into[name] = f.Type
	}
	return into
}
