package httpapi_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// The ids the system, the load generator and the tests create are
// identifiers; anything a path, a Kafka key or a log line could be hurt by
// is not.
func TestIDRule(t *testing.T) {
	for _, id := range []string{"2ZkQm3oOJj7TzZ9cJ1aHq1fwX4B", "order-0", "cart-17", "SKU-00013", "cus-1", "tok_approve",
		"lg-2ZkQm3oOJj7TzZ9cJ1aHq1fwX4B-12", "co-lg-t2-3", "wh-1:bin.3", strings.Repeat("a", 128)} {
		if !httpapi.ValidID(id) {
			t.Errorf("ValidID(%q) = false, want true", id)
		}
		var errs httpapi.FieldErrors
		errs.ID("id", id, true)
		if len(errs) > 0 {
			t.Errorf("ID(%q): %v", id, errs)
		}
	}
	for _, id := range []string{"", "-a", "a b", "a/b", "a%00b", "a\x00b", "é", "a?b", "a#b", strings.Repeat("a", 129)} {
		if httpapi.ValidID(id) {
			t.Errorf("ValidID(%q) = true, want false", id)
		}
	}
	var errs httpapi.FieldErrors
	errs.ID("cart_id", "", false)
	errs.ID("sku", "", true)
	errs.ID("id", "a\x00b", true)
	errs.ID("id2", "a b", true)
	got := []string{}
	for _, e := range errs {
		got = append(got, e.Field+": "+e.Message)
	}
	want := []string{"sku: is required", "id: must not contain control characters (U+0000 at character 2)",
		"id2: must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit (pattern " + httpapi.IDPattern + ")"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Lengths count characters, as JSON Schema's maxLength does, so the
// longest accepted name in Greek or emoji is as long as in ASCII.
func TestTextRule(t *testing.T) {
	tests := []struct {
		s        string
		max      int
		required bool
		want     string
	}{
		{"", 10, false, ""},
		{"", 10, true, "is required"},
		{"Grüße, 東京 😀", 12, true, ""},
		{strings.Repeat("😀", 10), 10, true, ""},
		{strings.Repeat("😀", 11), 10, true, "must be at most 10 characters, got 11"},
		{"a\x00b", 10, true, "must not contain control characters (U+0000 at character 2)"},
		{"tab\there", 10, true, "must not contain control characters (U+0009 at character 4)"},
		{"c1\u0085", 10, true, "must not contain control characters (U+0085 at character 3)"},
		{"del\x7f", 10, true, "must not contain control characters (U+007F at character 4)"},
		{"\xff", 10, true, "must be valid UTF-8"},
		{"nbsp\u00a0zwj\u200d", 10, true, ""}, // not category Cc
	}
	for _, tt := range tests {
		var errs httpapi.FieldErrors
		errs.Text("f", tt.s, tt.max, tt.required)
		got := ""
		if len(errs) > 0 {
			got = errs[0].Message
		}
		if got != tt.want {
			t.Errorf("Text(%q, %d, %v) = %q, want %q", tt.s, tt.max, tt.required, got, tt.want)
		}
	}
}

// TextPattern is what the OpenAPI documents state; it must agree with the
// checks (Go's regexp reads the literal characters the JSON escapes give).
func TestTextPatternAgrees(t *testing.T) {
	re := regexp.MustCompile(httpapi.TextPattern)
	for r := rune(0); r < 0x200; r++ {
		var errs httpapi.FieldErrors
		errs.Text("f", string(r), 1, true)
		if re.MatchString(string(r)) != (len(errs) == 0) {
			t.Errorf("U+%04X: pattern matches %v, Text errors %v", r, re.MatchString(string(r)), errs)
		}
	}
}
