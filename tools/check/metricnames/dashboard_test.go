package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// Each dashboard is JSON Grafana can load (title, uid, panels with ids,
// positions and queries), and each query is PromQL promtool parses: every
// expression becomes a recording rule of a file `promtool check rules`
// reads. The metric names are checked by TestDeployedFilesNameRegisteredMetrics.
func TestDashboards(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(root, "deploy/grafana/*.json"))
	if len(files) == 0 {
		t.Fatal("no dashboards in deploy/grafana")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found (deploy/local/stack.sh up installs Debian's prometheus package):", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		dec := json.NewDecoder(strings.NewReader(string(b)))
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
			t.Errorf("%s: title %q, uid %q, %d panels: want all three", f, d.Title, d.UID, len(d.Panels))
		}
		var rules strings.Builder
		rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: panel %q: id %d missing or not unique", f, p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.Title == "" || p.GridPos == nil || p.GridPos.W == 0 {
				t.Errorf("%s: panel %d has no title or position", f, p.ID)
			}
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			for _, q := range p.Targets {
				if strings.TrimSpace(q.Expr) == "" {
					t.Errorf("%s: panel %q query %s is empty", f, p.Title, q.RefID)
					continue
				}
				expr, _ := json.Marshal(q.Expr) // a JSON string is a YAML string
				fmt.Fprintf(&rules, "      - record: panel_%d_%s\n        expr: %s\n", p.ID, q.RefID, expr)
			}
		}
		rf := filepath.Join(t.TempDir(), "panels.yml")
		if err := os.WriteFile(rf, []byte(rules.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(promtool, "check", "rules", rf).CombinedOutput(); err != nil {
			t.Errorf("%s: a query is not PromQL promtool accepts: %v\n%s", f, err, out)
		}
	}
}
