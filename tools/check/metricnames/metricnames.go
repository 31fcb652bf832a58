// Command metricnames checks that every keel_* metric a Prometheus rules
// file or a Grafana dashboard names is registered by Keel's Go code, so an
// alert cannot watch a series that never exists (it would stay silent
// forever). `make check` runs it:
//
//	go run ./tools/check/metricnames deploy/prometheus/keel-rules.yml
//
// The names Keel registers are read from the source, not from a running
// process (a labelled series appears only at its first observation): in each
// non-test .go file, a Name: "keel_…" field is a name; a "keel_…_" literal
// (a prefix the file completes) or a Namespace "keel" with a Subsystem makes
// a name of every snake_case literal of the same file. That is generous (a
// literal that is not a metric suffix passes) but an invented name fails.
// -list prints the names it found. Exit 1 when a name is unknown.
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Go module folders whose code registers metrics (as in go.work).
var sourceDirs = []string{"events", "projections", "services"}

var (
	snake = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	// A metric name in a rules file or dashboard: keel_ not preceded by a
	// name character, so recording rules (keel:…) and KEEL_* env vars do
	// not count.
	used = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:])(keel_[a-z0-9_]+)`)
)

func main() {
	root := flag.String("root", ".", "repository root")
	list := flag.Bool("list", false, "print the metric names the Go code registers")
	flag.Parse()
	known, err := Known(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "metricnames:", err)
		os.Exit(2)
	}
	if *list {
		for _, n := range known.Names() {
			fmt.Println(n)
		}
	}
	bad := 0
	for _, f := range flag.Args() {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, "metricnames:", err)
			os.Exit(2)
		}
		for _, n := range known.Unknown(string(b)) {
			fmt.Printf("%s: %s is not a metric Keel's Go code registers\n", f, n)
			bad++
		}
	}
	if bad > 0 {
		os.Exit(1)
	}
}

// Names is what the Go code can register: exact names and, per file, the
// prefixes completed by that file's literals.
type Names struct {
	exact map[string]bool
	// prefixed: a prefix ("keel_checkout_") and the literals of its file.
	prefixed []prefixed
}

type prefixed struct {
	prefix   string
	suffixes map[string]bool
}

// Known reads the non-test Go files under root's source folders.
func Known(root string) (*Names, error) {
	n := &Names{exact: map[string]bool{}}
	fset := token.NewFileSet()
	for _, d := range sourceDirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") ||
				strings.HasSuffix(path, ".pb.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return fmt.Errorf("parse %s: %w", path, err)
			}
			n.addFile(f)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (n *Names) addFile(f *ast.File) {
	lits := map[string]bool{}
	var prefixes []string
	ast.Inspect(f, func(node ast.Node) bool {
		switch x := node.(type) {
		case *ast.BasicLit:
			if s, err := strconv.Unquote(x.Value); err == nil && x.Kind == token.STRING && snake.MatchString(s) {
				lits[s] = true
				if strings.HasPrefix(s, "keel_") && strings.HasSuffix(s, "_") {
					prefixes = append(prefixes, s)
				}
			}
		case *ast.KeyValueExpr:
			// Name: "keel_…" in an Opts literal; a database name is no metric.
			if k, ok := x.Key.(*ast.Ident); ok && k.Name == "Name" {
				if v, ok := x.Value.(*ast.BasicLit); ok {
					if s, err := strconv.Unquote(v.Value); err == nil && strings.HasPrefix(s, "keel_") && snake.MatchString(s) {
						n.exact[s] = true
					}
				}
			}
		case *ast.CompositeLit:
			if p := namespacePrefix(x); p != "" {
				prefixes = append(prefixes, p)
			}
		}
		return true
	})
	for _, p := range prefixes {
		n.prefixed = append(n.prefixed, prefixed{prefix: p, suffixes: lits})
	}
}

// namespacePrefix is "keel_<subsystem>_" for a prometheus.*Opts literal
// with Namespace "keel", or "".
func namespacePrefix(c *ast.CompositeLit) string {
	fields := map[string]string{}
	for _, e := range c.Elts {
		kv, ok := e.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		k, ok1 := kv.Key.(*ast.Ident)
		v, ok2 := kv.Value.(*ast.BasicLit)
		if ok1 && ok2 {
			if s, err := strconv.Unquote(v.Value); err == nil {
				fields[k.Name] = s
			}
		}
	}
	if fields["Namespace"] != "keel" {
		return ""
	}
	if sub := fields["Subsystem"]; sub != "" {
		return "keel_" + sub + "_"
	}
	return "keel_"
}

// Has says whether the code registers name, a histogram's or summary's
// _bucket, _sum and _count series included.
func (n *Names) Has(name string) bool {
	if n.has(name) {
		return true
	}
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, s); ok && n.has(base) {
			return true
		}
	}
	return false
}

func (n *Names) has(name string) bool {
	if n.exact[name] {
		return true
	}
	for _, p := range n.prefixed {
		if s, ok := strings.CutPrefix(name, p.prefix); ok && p.suffixes[s] {
			return true
		}
	}
	return false
}

// Unknown lists, sorted and once each, the keel_* names text uses that the
// code does not register.
func (n *Names) Unknown(text string) []string {
	var bad []string
	for _, m := range used.FindAllStringSubmatch(text, -1) {
		if !n.Has(m[1]) && !slices.Contains(bad, m[1]) {
			bad = append(bad, m[1])
		}
	}
	slices.Sort(bad)
	return bad
}

// Names lists the exact names and every prefix with its file's literals
// that look like metric suffixes (_total, _seconds, …): for reading, not
// for checking.
func (n *Names) Names() []string {
	var out []string
	for k := range n.exact {
		out = append(out, k)
	}
	for _, p := range n.prefixed {
		for s := range p.suffixes {
			if metricSuffix.MatchString(s) && !strings.HasPrefix(s, "keel_") {
				out = append(out, p.prefix+s)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

var metricSuffix = regexp.MustCompile(`_(total|seconds|records|events|due|size|in_flight)$|^due$`)
