package codec

import (
	"strings"
	"unicode"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Enum values have one name outside protobuf: what HTTP inputs take and
// outputs, documents and read models show. It is the value's name without
// its enum's prefix, in lower case: CancelReason's
// CANCEL_REASON_OUT_OF_STOCK is "out_of_stock". Deriving it here, from the
// schema, keeps the inputs and the outputs of every service on the same
// words (buf lint's ENUM_VALUE_PREFIX guarantees the prefix).

// EnumName returns the API name of e: "" for the zero value
// (…_UNSPECIFIED) and for a number its enum does not define.
func EnumName(e protoreflect.Enum) string {
	if e.Number() == 0 {
		return ""
	}
	v := e.Descriptor().Values().ByNumber(e.Number())
	if v == nil {
		return ""
	}
	return valueName(e.Descriptor(), v)
}

// ParseEnum returns the value of E whose API name (EnumName) is name;
// false for "" and for a name E does not define.
func ParseEnum[E interface {
	~int32
	protoreflect.Enum
}](name string) (E, bool) {
	var zero E
	d := zero.Descriptor()
	for i := range d.Values().Len() {
		v := d.Values().Get(i)
		if v.Number() != 0 && valueName(d, v) == name {
			return E(v.Number()), true
		}
	}
	return zero, false
}

// EnumNames lists the API names of d's values but the zero value, in
// number order: what a document's enum or an error message lists.
func EnumNames(d protoreflect.EnumDescriptor) []string {
	out := make([]string, 0, d.Values().Len())
	for i := range d.Values().Len() {
		if v := d.Values().Get(i); v.Number() != 0 {
			out = append(out, valueName(d, v))
		}
	}
	return out
}

func valueName(d protoreflect.EnumDescriptor, v protoreflect.EnumValueDescriptor) string {
	name := string(v.Name())
	if rest, ok := strings.CutPrefix(name, enumPrefix(string(d.Name()))); ok {
		name = rest
	}
	return strings.ToLower(name)
}

// enumPrefix is the prefix of an enum's value names: its name in upper
// snake case and "_" (CancelReason → CANCEL_REASON_).
func enumPrefix(name string) string {
	var b strings.Builder
	for i, r := range name {
		if i > 0 && unicode.IsUpper(r) {
			if p := rune(name[i-1]); unicode.IsLower(p) || unicode.IsDigit(p) {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String() + "_"
}
