package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/keel-commerce/keel/tools/loadgen/load"
)

// quantile returns the q-quantile (nearest rank) of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration { return load.Quantile(sorted, q) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// figure is one reported number; every run adds a value.
type figure struct {
	key    string // key=value name
	label  string // table label
	unit   string
	target string             // e.g. ">=10000"; empty: none
	pass   func(float64) bool // nil: no target
	vals   []float64
}

// figures keeps the report's figures in the order they were first defined.
type figures struct {
	order []*figure
	byKey map[string]*figure
}

func newFigures() *figures { return &figures{byKey: map[string]*figure{}} }

func (fs *figures) def(key, label, unit, target string, pass func(float64) bool) {
	f := &figure{key: key, label: label, unit: unit, target: target, pass: pass}
	fs.order = append(fs.order, f)
	fs.byKey[key] = f
}

func (fs *figures) add(key string, v float64) {
	f, ok := fs.byKey[key]
	if !ok {
		panic("undefined figure " + key)
	}
	f.vals = append(f.vals, v)
}

// put adds v to the figure key, defining it first if it is new: figures
// whose set depends on what a run saw (CPU by process) are defined as they
// come, in that order.
func (fs *figures) put(key, label, unit, target string, pass func(float64) bool, v float64) {
	if fs.byKey[key] == nil {
		fs.def(key, label, unit, target, pass)
	}
	fs.add(key, v)
}

func atLeast(t float64) func(float64) bool { return func(v float64) bool { return v >= t } }
func atMost(t float64) func(float64) bool  { return func(v float64) bool { return v <= t } }

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func (f *figure) status() string {
	if f.pass == nil || len(f.vals) == 0 {
		return ""
	}
	if f.pass(median(f.vals)) {
		return "PASS"
	}
	return "MISS"
}

// table prints the human-readable table and returns the key=value lines.
func (fs *figures) report() (table string, lines []string) {
	var b strings.Builder
	fmt.Fprintf(&b, "%-52s %11s %11s %11s  %-9s %-8s %s\n", "figure", "median", "min", "max", "unit", "target", "")
	fmt.Fprintf(&b, "%s\n", strings.Repeat("-", 112))
	for _, f := range fs.order {
		if len(f.vals) == 0 {
			continue
		}
		s := slices.Clone(f.vals)
		sort.Float64s(s)
		med, lo, hi := median(s), s[0], s[len(s)-1]
		fmt.Fprintf(&b, "%-52s %11s %11s %11s  %-9s %-8s %s\n", f.label, fmtNum(med), fmtNum(lo), fmtNum(hi), f.unit, f.target, f.status())
		line := fmt.Sprintf("BENCH %s=%s min=%s max=%s runs=%d unit=%s", f.key, fmtNum(med), fmtNum(lo), fmtNum(hi), len(s), f.unit)
		if f.pass != nil {
			line += fmt.Sprintf(" target=%s status=%s", f.target, f.status())
		}
		lines = append(lines, line)
	}
	return b.String(), lines
}
