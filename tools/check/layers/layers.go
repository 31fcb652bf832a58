// Command layers enforces Keel's one absolute import rule: a domain package
// (any package with a path element named "domain") does no I/O, so it must
// not import, directly or through any chain of imports, a database, Kafka,
// HTTP or RPC client. `make check` runs it over every module in go.work:
//
//	go run ./tools/check/layers ./events/... ./tools/... ./services/...
//
// It prints one line per violation, with the import chain that causes it,
// and exits 1 if there is any.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
)

// Forbidden lists import-path prefixes a domain package may not reach. A
// prefix matches itself and everything below it ("net/http" covers
// "net/http/httptest" but not "net/httpx").
var Forbidden = []string{
	"database/sql",
	"net/http",
	"net/rpc",
	"github.com/jackc",          // pgx, pgconn, pgxpool
	"github.com/lib/pq",         // PostgreSQL
	"github.com/twmb",           // franz-go
	"github.com/IBM/sarama",     // Kafka
	"github.com/Shopify/sarama", // Kafka
	"github.com/segmentio/kafka-go",
	"github.com/confluentinc", // confluent-kafka-go
	"github.com/EventStore",   // EventStoreDB client
	"github.com/kurrent-io",   // EventStoreDB (KurrentDB) client
	"google.golang.org/grpc",
}

// Package is the part of `go list -json` output the check reads.
type Package struct {
	ImportPath string
	Imports    []string
	DepOnly    bool
}

// Violation is a domain package that reaches a forbidden package.
type Violation struct {
	Domain    string
	Forbidden string
	// Chain is the import path from Domain to Forbidden, both included.
	Chain []string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s must not import %s (via %s)", v.Domain, v.Forbidden, strings.Join(v.Chain, " -> "))
}

// IsDomain reports whether the package at importPath is a domain package.
func IsDomain(importPath string) bool {
	for _, elem := range strings.Split(importPath, "/") {
		if elem == "domain" {
			return true
		}
	}
	return false
}

// IsForbidden reports whether a domain package may not import importPath.
func IsForbidden(importPath string) bool {
	for _, p := range Forbidden {
		if importPath == p || strings.HasPrefix(importPath, p+"/") {
			return true
		}
	}
	return false
}

// Check returns every domain package among the non-dependency packages in
// pkgs that reaches a forbidden package, with one shortest import chain
// each. pkgs must be closed under imports, as `go list -deps` prints them.
func Check(pkgs []Package) []Violation {
	imports := make(map[string][]string, len(pkgs))
	for _, p := range pkgs {
		imports[p.ImportPath] = p.Imports
	}
	var out []Violation
	for _, p := range pkgs {
		if p.DepOnly || !IsDomain(p.ImportPath) {
			continue
		}
		// Breadth-first, so each forbidden package is reported with the
		// shortest chain, and once: the first forbidden package on a branch
		// is the one to remove, what lies beyond it does not matter.
		parent := map[string]string{p.ImportPath: ""}
		queue := []string{p.ImportPath}
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			for _, imp := range imports[cur] {
				if _, seen := parent[imp]; seen {
					continue
				}
				parent[imp] = cur
				if IsForbidden(imp) {
					out = append(out, Violation{Domain: p.ImportPath, Forbidden: imp, Chain: chain(parent, imp)})
					continue
				}
				queue = append(queue, imp)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Domain != out[j].Domain {
			return out[i].Domain < out[j].Domain
		}
		return out[i].Forbidden < out[j].Forbidden
	})
	return out
}

func chain(parent map[string]string, last string) []string {
	var c []string
	for p := last; p != ""; p = parent[p] {
		c = append(c, p)
	}
	for i, j := 0, len(c)-1; i < j; i, j = i+1, j-1 {
		c[i], c[j] = c[j], c[i]
	}
	return c
}

// List runs `go list -deps` on patterns in dir and returns the packages.
func List(dir string, patterns ...string) ([]Package, error) {
	args := append([]string{"list", "-deps", "-json=ImportPath,Imports,DepOnly"}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, stderr.Bytes())
	}
	var pkgs []Package
	dec := json.NewDecoder(bytes.NewReader(stdout))
	for {
		var p Package
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			return pkgs, nil
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
}

func main() {
	patterns := os.Args[1:]
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	pkgs, err := List("", patterns...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "layers:", err)
		os.Exit(2)
	}
	vs := Check(pkgs)
	for _, v := range vs {
		fmt.Println(v)
	}
	if len(vs) > 0 {
		fmt.Fprintf(os.Stderr, "layers: %d violation(s): domain packages do no I/O (STYLE.md, Layout)\n", len(vs))
		os.Exit(1)
	}
}
