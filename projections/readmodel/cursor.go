package readmodel

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// Cursor is a keyset-pagination position in a list ordered by (time, id)
// descending: the last row of the previous page. Its string form is
// opaque to clients.
type Cursor struct {
	At time.Time
	ID string
}

// String encodes c ("" for the zero Cursor).
func (c Cursor) String() string {
	if c.ID == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.At.UnixMicro(), 10) + ":" + c.ID))
}

// ErrBadCursor is returned by ParseCursor for a string it did not make.
var ErrBadCursor = errors.New("malformed cursor")

// ParseCursor decodes a cursor made by String; "" is the zero Cursor.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: %v", ErrBadCursor, err)
	}
	at, id, ok := strings.Cut(string(b), ":")
	us, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil || id == "" {
		return Cursor{}, fmt.Errorf("%w: pass the next_cursor of the previous page as it is", ErrBadCursor)
	}
	return Cursor{At: time.UnixMicro(us).UTC(), ID: id}, nil
}

// TimeOf is a protobuf timestamp as a canonical time (zero if unset).
func TimeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime().UTC().Truncate(time.Microsecond)
}
