package codec_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/codec"
)

// FuzzDecode: for any registered type and any payload, Decode does not
// panic and fails only with ErrUndecodable; what it decodes encodes again
// and decodes to an equal message (unknown fields kept), and JSON renders
// it (make test runs it for a few seconds).
func FuzzDecode(f *testing.F) {
	reg := codec.All()
	types := reg.Types()
	for i, typ := range types {
		msg, err := reg.New(typ)
		if err != nil {
			f.Fatal(err)
		}
		_, payload, err := reg.Encode(msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint16(i), payload)
		f.Add(uint16(i), []byte{0x0a, 0x03, 'a', 'b', 'c', 0x10, 0x07})
	}
	f.Fuzz(func(t *testing.T, i uint16, payload []byte) {
		typ := types[int(i)%len(types)]
		msg, err := reg.Decode(typ, payload)
		if err != nil {
			if !errors.Is(err, codec.ErrUndecodable) {
				t.Fatalf("%s: %v, want ErrUndecodable", typ, err)
			}
			return
		}
		gotType, again, err := reg.Encode(msg)
		if err != nil || gotType != typ {
			t.Fatalf("%s: re-encode as %s: %v", typ, gotType, err)
		}
		back, err := reg.Decode(typ, again)
		if err != nil || !proto.Equal(back, msg) {
			t.Fatalf("%s: %x decodes to %v, re-encoded %x decodes to %v (%v)", typ, payload, msg, again, back, err)
		}
		if _, err := reg.JSON(typ, payload); err != nil {
			t.Fatalf("%s: JSON of a decodable payload: %v", typ, err)
		}
	})
}
