package main

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIsDomain(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"github.com/keel-commerce/keel/services/orders/domain", true},
		{"github.com/keel-commerce/keel/services/orders/domain/pricing", true},
		{"domain", true},
		{"github.com/keel-commerce/keel/services/orders/domainx", false},
		{"github.com/keel-commerce/keel/services/orders/app", false},
	}
	for _, tt := range tests {
		if got := IsDomain(tt.path); got != tt.want {
			t.Errorf("IsDomain(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestIsForbidden(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"net/http", true},
		{"net/http/httptest", true},
		{"database/sql", true},
		{"database/sql/driver", true},
		{"github.com/jackc/pgx/v5/pgxpool", true},
		{"github.com/twmb/franz-go/pkg/kgo", true},
		{"net/httpx", false},
		{"net/url", false},
		{"time", false},
		{"google.golang.org/protobuf/proto", false},
		{"github.com/keel-commerce/keel/events/stock/v1", false},
	}
	for _, tt := range tests {
		if got := IsForbidden(tt.path); got != tt.want {
			t.Errorf("IsForbidden(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestCheck(t *testing.T) {
	const (
		dom   = "k/services/orders/domain"
		app   = "k/services/orders/app"
		types = "k/events/orders/v1"
	)
	tests := []struct {
		name string
		pkgs []Package
		want []Violation
	}{
		{
			name: "clean domain",
			pkgs: []Package{
				{ImportPath: dom, Imports: []string{types, "time"}},
				{ImportPath: types, Imports: []string{"google.golang.org/protobuf/proto"}, DepOnly: true},
				{ImportPath: app, Imports: []string{dom, "github.com/jackc/pgx/v5"}},
			},
		},
		{
			name: "direct import",
			pkgs: []Package{{ImportPath: dom, Imports: []string{"net/http"}}},
			want: []Violation{{dom, "net/http", []string{dom, "net/http"}}},
		},
		{
			name: "transitive import, shortest chain, each forbidden package once",
			pkgs: []Package{
				{ImportPath: dom, Imports: []string{"k/a", "k/b"}},
				{ImportPath: "k/a", Imports: []string{"k/c"}, DepOnly: true},
				{ImportPath: "k/b", Imports: []string{"github.com/twmb/franz-go/pkg/kgo"}, DepOnly: true},
				{ImportPath: "k/c", Imports: []string{"k/b", "database/sql"}, DepOnly: true},
			},
			want: []Violation{
				{dom, "database/sql", []string{dom, "k/a", "k/c", "database/sql"}},
				{dom, "github.com/twmb/franz-go/pkg/kgo", []string{dom, "k/b", "github.com/twmb/franz-go/pkg/kgo"}},
			},
		},
		{
			name: "domain package pulled in only as a dependency is not judged here",
			pkgs: []Package{{ImportPath: "other/domain", Imports: []string{"net/http"}, DepOnly: true}},
		},
		{
			name: "import cycle terminates",
			pkgs: []Package{
				{ImportPath: dom, Imports: []string{"k/a"}},
				{ImportPath: "k/a", Imports: []string{dom}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Check(tt.pkgs)); diff != "" {
				t.Errorf("Check (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFixture runs the real `go list` over testdata/fixture, a module with
// one clean domain package and two that break the rule.
func TestFixture(t *testing.T) {
	t.Setenv("GOWORK", "off") // the fixture is its own module, not in go.work
	pkgs, err := List("testdata/fixture", "./...")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, p := range pkgs {
		if !p.DepOnly {
			paths = append(paths, p.ImportPath)
		}
	}
	if !slices.Contains(paths, "example.com/fixture/carts/domain") {
		t.Fatalf("go list missed the fixture packages: %v", paths)
	}
	want := []Violation{
		{
			Domain:    "example.com/fixture/orders/domain",
			Forbidden: "net/http",
			Chain:     []string{"example.com/fixture/orders/domain", "example.com/fixture/internal/infra", "net/http"},
		},
		{
			Domain:    "example.com/fixture/orders/domain/pricing",
			Forbidden: "database/sql",
			Chain:     []string{"example.com/fixture/orders/domain/pricing", "database/sql"},
		},
	}
	if diff := cmp.Diff(want, Check(pkgs)); diff != "" {
		t.Errorf("Check (-want +got):\n%s", diff)
	}
}
