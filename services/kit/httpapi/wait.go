package httpapi

import (
	"fmt"
	"regexp"
	"time"
)

// MaxWait is the longest ?wait= a Keel API takes (a long poll, a wait for
// a consistency token): long enough to ride out a slow read model, short
// enough to stay under any proxy's idle timeout.
const MaxWait = 30 * time.Second

// WaitPattern is the grammar of ?wait=, as the OpenAPI documents state it:
// 0, seconds (up to three decimals) up to 30s, or milliseconds up to
// 30000ms. A duration Go would also parse ("1m", "500us", "1s500ms") is
// refused, so what the document allows and what the server takes are the
// same set.
const WaitPattern = `^(0|([0-9]|[12][0-9])(\.[0-9]{1,3})?s|30(\.0{1,3})?s|([0-9]{1,4}|[12][0-9]{4}|30000)ms)$`

var waitRE = regexp.MustCompile(WaitPattern)

// ParseWait reads a ?wait= value written as WaitPattern says; the result
// is between 0 and MaxWait.
func ParseWait(s string) (time.Duration, error) {
	if !waitRE.MatchString(s) {
		return 0, fmt.Errorf("wait=%q: want 0, seconds up to 30s (such as 10s or 2.5s) or milliseconds up to 30000ms", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("wait=%q: %w", s, err)
	}
	return d, nil
}
