package httpapi_test

import (
	"testing"
	"time"

	"github.com/keel-commerce/keel/services/kit/httpapi"
)

func TestParseWait(t *testing.T) {
	for s, want := range map[string]time.Duration{
		"0": 0, "0s": 0, "10s": 10 * time.Second, "2.5s": 2500 * time.Millisecond, "30s": httpapi.MaxWait,
		"30.000s": httpapi.MaxWait, "500ms": 500 * time.Millisecond, "30000ms": httpapi.MaxWait, "0ms": 0,
	} {
		if got, err := httpapi.ParseWait(s); err != nil || got != want {
			t.Errorf("ParseWait(%q) = %s, %v; want %s", s, got, err, want)
		}
	}
	for _, s := range []string{"", "forever", "-1s", "31s", "30.5s", "30001ms", "1m", "500us", "1s500ms", "+1s", " 1s", "1.s", "1e3ms"} {
		if got, err := httpapi.ParseWait(s); err == nil {
			t.Errorf("ParseWait(%q) = %s, want an error", s, got)
		}
	}
}
