// Package consistency is the read-your-writes token: what a command's
// answer carries and a query passes back to wait for its own write.
//
// A token names, for one context, the version every stream the command
// touched had reached after it. A read model has applied the command once
// it has applied each of those streams up to that version. Stream versions
// rather than one global position, because a projection consumes Kafka
// partitions in parallel: it knows exactly how far it is in each stream,
// never "everything up to position P" across streams.
//
// The string form is opaque to clients: "ct1." and base64url JSON.
package consistency

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Header is the HTTP header that carries a token, on command answers and
// on queries that want to see that command.
const Header = "Consistency-Token"

const prefix = "ct1."

// Token is a set of stream versions of one context.
type Token struct {
	Context string           `json:"c"`
	Streams map[string]int64 `json:"s"`
}

// New returns the token of streams (versions ≤ 0 are left out), or the zero
// Token if none is left.
func New(context string, streams map[string]int64) Token {
	t := Token{Context: context, Streams: map[string]int64{}}
	for s, v := range streams {
		if v > 0 {
			t.Streams[s] = v
		}
	}
	if len(t.Streams) == 0 {
		return Token{}
	}
	return t
}

// IsZero reports whether t names nothing to wait for.
func (t Token) IsZero() bool { return len(t.Streams) == 0 }

// String is the token's opaque form ("" for the zero Token).
func (t Token) String() string {
	if t.IsZero() {
		return ""
	}
	b, _ := json.Marshal(t) // a string and a map of int64: cannot fail
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// ErrMalformed is returned by Parse for a string that is not a token.
var ErrMalformed = errors.New("malformed consistency token")

// Parse reads a token made by String.
func Parse(s string) (Token, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), prefix)
	if !ok {
		return Token{}, fmt.Errorf("%w: want the %q form a command answer carries", ErrMalformed, prefix+"…")
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var t Token
	if err := json.Unmarshal(b, &t); err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if t.Context == "" || len(t.Streams) == 0 {
		return Token{}, fmt.Errorf("%w: no context or no streams", ErrMalformed)
	}
	for s, v := range t.Streams {
		if s == "" || v <= 0 {
			return Token{}, fmt.Errorf("%w: stream %q at version %d", ErrMalformed, s, v)
		}
	}
	return t, nil
}
