package consistency

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRoundTrip(t *testing.T) {
	tok := New("stock", map[string]int64{"stock-SKU:1,2": 7, "stock-B": 1, "stock-none": 0})
	got, err := Parse(tok.String())
	if err != nil {
		t.Fatal(err)
	}
	want := Token{Context: "stock", Streams: map[string]int64{"stock-SKU:1,2": 7, "stock-B": 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
}

func TestZero(t *testing.T) {
	if tok := New("orders", map[string]int64{"order-1": 0}); !tok.IsZero() || tok.String() != "" {
		t.Fatalf("New with no positive versions = %+v %q, want zero", tok, tok.String())
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{"", "12/34", "ct1.", "ct1.!!!", "ct1.e30", // {}
		"ct1." + "eyJjIjoib3JkZXJzIiwicyI6eyJvcmRlci0xIjotMX19", // version -1
	} {
		if _, err := Parse(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", s, err)
		}
	}
}
