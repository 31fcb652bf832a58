package httpapi

import (
	"fmt"
	"regexp"
	"unicode"
	"unicode/utf8"
)

// The string rule at Keel's edge. Whatever a service accepts is stored by
// its own event store and by every consumer downstream (PostgreSQL text
// and jsonb refuse U+0000; a read model that cannot store a value stops),
// so every string is checked before anything is stored:
//
//   - free text (names, notes, addresses, reasons, tokens, e-mails) is
//     valid UTF-8 without control characters (Unicode category Cc:
//     U+0000–U+001F, U+007F–U+009F), at most a per-field number of
//     characters (code points, as JSON Schema's maxLength counts);
//   - identifiers (ids in paths, bodies and cursors, command ids, SKUs)
//     match IDPattern: ASCII, safe in a URL path segment, a Kafka key and
//     a log line.
//
// Decode applies the free-text rule to every string of every body, the
// routing checks of Wrap to every path and query parameter; Validate
// methods add the per-field lengths and patterns with FieldErrors.Text and
// FieldErrors.ID. The OpenAPI documents state the same rule as pattern,
// minLength and maxLength.
const (
	// IDPattern is every identifier's pattern. It admits KSUIDs,
	// "order-…", "lg-<ksuid>-12", "SKU-00013", "cus-1", "wh-1:bin-3".
	IDPattern = `^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`
	// MaxIDLength is the longest identifier, in characters.
	MaxIDLength = 128
	// SKUPattern is a SKU's, stricter than IDPattern (no ':', at most 64),
	// as the stock service has always documented it.
	SKUPattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`
	// TextPattern is the free-text rule as a regular expression, as the
	// OpenAPI documents state it: no character of category Cc.
	TextPattern = "^[^\u0000-\u001f\u007f-\u009f]*$"
)

// Lengths, in characters, of the free text that crosses services (a
// cart's checkout becomes an order and a payment), so every service takes
// the same and the next one can keep what the first accepted.
const (
	MaxEmail      = 254 // RFC 5321's longest path
	MaxName       = 200 // a person's or a product's name, an address line
	MaxShortText  = 100 // a city, a region, a carrier, a tracking number
	MaxPostalCode = 32
	MaxToken      = 256  // a payment provider's token for a method
	MaxNote       = 1000 // a reason's detail, a note
)

var (
	idRe  = regexp.MustCompile(IDPattern)
	skuRe = regexp.MustCompile(SKUPattern)
)

// ValidID reports whether s matches IDPattern.
func ValidID(s string) bool { return idRe.MatchString(s) }

// TextFault says what breaks the free-text rule in s (invalid UTF-8, a
// control character), or "" if nothing does: for other edges (the Kafka
// command topics) to apply the same rule.
func TextFault(s string) string { return textFault(s) }

// textFault says what breaks the free-text rule in s, or "" if nothing does.
func textFault(s string) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	n := 0
	for _, r := range s {
		n++
		if unicode.IsControl(r) { // exactly category Cc
			return fmt.Sprintf("must not contain control characters (U+%04X at character %d)", r, n)
		}
	}
	return ""
}

// idFault says why s is not an identifier, or "" if it is one.
func idFault(s string) string {
	if ValidID(s) {
		return ""
	}
	if f := textFault(s); f != "" {
		return f
	}
	return fmt.Sprintf("must be 1 to %d letters, digits, '.', '_', ':' or '-', starting with a letter or digit (pattern %s)", MaxIDLength, IDPattern)
}

// Text adds an error for field if s is not free text of at most max
// characters; an empty s is an error only when required.
func (e *FieldErrors) Text(field, s string, max int, required bool) {
	switch {
	case s == "":
		if required {
			e.Add(field, "is required")
		}
	case textFault(s) != "":
		e.Add(field, "%s", textFault(s))
	case utf8.RuneCountInString(s) > max:
		e.Add(field, "must be at most %d characters, got %d", max, utf8.RuneCountInString(s))
	}
}

// ID adds an error for field if s is not an identifier (IDPattern); an
// empty s is an error only when required.
func (e *FieldErrors) ID(field, s string, required bool) { e.IDUpTo(field, s, MaxIDLength, required) }

// IDUpTo is ID for an identifier of at most max characters: one other
// ids are made from ("order-" + a checkout id) must leave them room.
func (e *FieldErrors) IDUpTo(field, s string, max int, required bool) {
	switch {
	case s == "":
		if required {
			e.Add(field, "is required")
		}
	case idFault(s) != "":
		e.Add(field, "%s", idFault(s))
	case len(s) > max:
		e.Add(field, "must be at most %d characters, got %d", max, len(s))
	}
}

// SKU adds an error for field if s is not a SKU (SKUPattern); an empty s
// is an error only when required.
func (e *FieldErrors) SKU(field, s string, required bool) {
	switch {
	case s == "":
		if required {
			e.Add(field, "is required")
		}
	case !skuRe.MatchString(s):
		if f := textFault(s); f != "" {
			e.Add(field, "%s", f)
			return
		}
		e.Add(field, "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (pattern %s)", SKUPattern)
	}
}
