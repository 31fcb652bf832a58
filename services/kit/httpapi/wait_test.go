package httpapi_test

import (
	"net/http/httptest"
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

func TestEmptyParams(t *testing.T) {
	if p := httpapi.EmptyParams(httptest.NewRequest("GET", "/x?wait=1s&status=open", nil)); p != nil {
		t.Errorf("no empty parameter: %+v", p)
	}
	p := httpapi.EmptyParams(httptest.NewRequest("GET", "/x?wait=&status=open&limit", nil))
	if p == nil || p.Status != 400 || len(p.Errors) != 2 || p.Errors[0].Field != "limit" || p.Errors[1].Field != "wait" {
		t.Errorf("wait= and limit: %+v", p)
	}
}
