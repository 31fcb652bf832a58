package command

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"google.golang.org/protobuf/proto"
)

// Fingerprint says what a command is, less its id: what it does (Kind,
// "ReceiveStock"), the aggregate it names (Target, "SKU-00011") and its
// input (Input: a proto.Message, or a value encoded as JSON). A field
// command_id (protobuf) or CommandID (Go struct) of Input is left out, so
// the same command under two ids has one fingerprint. It is stored with the
// command's outcome; the id seen again with another fingerprint is refused
// (IDReused), not replayed: a command id names one command.
type Fingerprint struct {
	Kind   string
	Target string
	Input  any
}

// CodeIDReused is the Rejection code of a command id already decided for
// another command.
const CodeIDReused = "command_id_reused"

// ErrIDReused is what an IDReused error Is.
var ErrIDReused = errors.New("command id reused for a different command")

// IDReused is a command refused because its id was first used for another
// command (Kind on Target). It reaches the caller inside a *Rejection
// (code CodeIDReused) and is never stored: the id keeps its first outcome.
type IDReused struct {
	ID           string
	Kind, Target string // the command that first used the id
}

func (e *IDReused) Error() string {
	first := e.Kind
	if first == "" {
		first = "another command"
	}
	if e.Target != "" {
		first += " on " + e.Target
	}
	return fmt.Sprintf("command id %q was first used for %s, with other input; a command id names one command: use a new id for a new command",
		e.ID, first)
}

// Is makes errors.Is(err, ErrIDReused) true.
func (e *IDReused) Is(target error) bool { return target == ErrIDReused }

func (e *IDReused) rejection() *Rejection {
	return &Rejection{Code: CodeIDReused, Detail: e.Error(), err: e}
}

// digest hashes kind, target (the command's streams when it names none)
// and the canonical input; an input that cannot be encoded is the caller's
// bug.
func (f Fingerprint) digest(streams []string) ([]byte, error) {
	in, err := canonical(f.Input)
	if err != nil {
		return nil, fmt.Errorf("%w: fingerprint of %s: %w", ErrInvalidCommand, f.Kind, err)
	}
	h := sha256.New()
	for _, part := range []string{f.Kind, f.target(streams)} {
		fmt.Fprintf(h, "%d:%s\n", len(part), part)
	}
	h.Write(in)
	return h.Sum(nil), nil
}

// canonical encodes a command's input without its id: protobuf
// deterministically, anything else as JSON (struct fields in order, map
// keys sorted).
func canonical(input any) ([]byte, error) {
	switch in := input.(type) {
	case nil:
		return nil, nil
	case proto.Message:
		m := proto.Clone(in)
		r := m.ProtoReflect()
		if fd := r.Descriptor().Fields().ByName("command_id"); fd != nil {
			r.Clear(fd)
		}
		return proto.MarshalOptions{Deterministic: true}.Marshal(m)
	}
	return json.Marshal(withoutCommandID(input))
}

// withoutCommandID returns a copy of a struct (or pointer to one) with its
// CommandID field zeroed; anything else as it is.
func withoutCommandID(input any) any {
	v := reflect.ValueOf(input)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return input
	}
	f, ok := v.Type().FieldByName("CommandID")
	if !ok || !f.IsExported() {
		return input
	}
	c := reflect.New(v.Type()).Elem()
	c.Set(v)
	c.FieldByIndex(f.Index).SetZero()
	return c.Interface()
}

// target names a command's target for IDReused: the fingerprint's, else
// its streams.
func (f Fingerprint) target(streams []string) string {
	if f.Target != "" {
		return f.Target
	}
	return strings.Join(streams, ", ")
}
