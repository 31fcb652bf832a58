// Package apifuzz holds the property-based API tests: every Keel HTTP API
// runs as its real binary, on fresh databases of the local PostgreSQL and
// prefixed topics of the local broker, and schemathesis (pinned in
// requirements.txt, installed into .stack/apifuzz-venv) drives it from its
// own /openapi.json with all its checks: no 5xx, every answer as
// documented, no request the document allows refused, none it forbids
// accepted. hooks.py holds the few rules the schemas cannot state.
package apifuzz

import (
	"bytes"
	"cmp"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/ksuid"

	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/tools/internal/pyvenv"
)

// service is one API under test: its binary (a main package) and its
// environment beyond the database, address and Kafka settings.
type service struct {
	name, pkg string
	env       []string
}

var services = []service{
	{name: "catalog", pkg: "./services/carts/cmd/catalog"},
	{name: "carts", pkg: "./services/carts/cmd/carts"},
	{name: "stock", pkg: "./services/stock/cmd/stock", env: []string{"KEEL_STOCK_WAREHOUSES=wh-1,wh-2"}},
	{name: "orders", pkg: "./services/orders/cmd/orders"},
	{name: "payments", pkg: "./services/payments/cmd/payments"},
	{name: "checkout", pkg: "./services/checkout/cmd/checkout"},
	{name: "keel-projections", pkg: "./projections/cmd/keel-projections"},
}

// maxExamples bounds the test cases per operation and phase (env
// KEEL_APIFUZZ_EXAMPLES raises it for a longer run by hand, and
// KEEL_APIFUZZ_SEED draws other cases than seed 7's).
func maxExamples() int {
	if n, err := strconv.Atoi(os.Getenv("KEEL_APIFUZZ_EXAMPLES")); err == nil && n > 0 {
		return n
	}
	return 15
}

func TestAPIsAgainstTheirDocuments(t *testing.T) {
	root := testenv.Root(t)
	py := pyvenv.Python(t, root, "apifuzz-venv", "requirements.txt")
	st := filepath.Join(filepath.Dir(py), "schemathesis")
	hooks, err := filepath.Abs("hooks.py")
	if err != nil {
		t.Fatal(err)
	}
	config, err := filepath.Abs("schemathesis.toml")
	if err != nil {
		t.Fatal(err)
	}
	var pkgs []string
	for _, s := range services {
		pkgs = append(pkgs, s.pkg)
	}
	bin := testenv.Build(t, pkgs...)

	prefix := "apifuzz-" + strings.ToLower(ksuid.New().String()[:12]) + "."
	deleteTopics(t, prefix)
	dbs := map[string]string{}
	for _, s := range services {
		dbs[s.name] = testenv.DatabaseURL(t)
	}
	common := []string{"KEEL_KAFKA_BROKERS=" + strings.Join(testenv.KafkaBrokers(), ","), "KEEL_TOPIC_PREFIX=" + prefix,
		"KEEL_TOPIC_PARTITIONS=1", "KEEL_LOG_LEVEL=warn"}
	// One at a time, each ready before the next: the catalog migrates the
	// table carts reads prices from.
	var procs []*testenv.Proc
	bases := map[*testenv.Proc]string{}
	for _, s := range services {
		addr := testenv.FreeAddr(t)
		env := append(append([]string{}, common...), "KEEL_DATABASE_URL="+dbs[s.name], "KEEL_HTTP_ADDR="+addr)
		if s.name == "carts" {
			env = append(env, "KEEL_CATALOG_DATABASE_URL="+dbs["catalog"])
		}
		p := &testenv.Proc{Name: s.name, Bin: filepath.Join(bin, filepath.Base(s.pkg)), Ready: "http://" + addr + "/readyz",
			Env: append(env, s.env...)}
		p.Start(t)
		procs = append(procs, p)
		bases[p] = "http://" + addr
	}

	for _, p := range procs {
		t.Run(p.Name, func(t *testing.T) {
			base := bases[p]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, st, "--config-file", config, "run", base+"/openapi.json", "--url", base,
				"--checks", "all", "--phases", "examples,coverage,fuzzing",
				"--max-examples", strconv.Itoa(maxExamples()), "--seed", cmp.Or(os.Getenv("KEEL_APIFUZZ_SEED"), "7"), "--workers", "1",
				"--request-timeout", "20", "--generation-database", "none", "--no-color")
			cmd.Env = append(os.Environ(), "SCHEMATHESIS_HOOKS="+hooks)
			cmd.Dir = t.TempDir() // its .hypothesis and .schemathesis folders
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			t.Logf("schemathesis on %s: %s", p.Name, time.Since(start).Round(time.Second))
			if err != nil {
				t.Errorf("schemathesis found failures in %s (%v):\n%s", p.Name, err, failures(out.String()))
			}
			p.Running(t)
		})
	}
}

// failures is schemathesis's report from its FAILURES section on.
func failures(out string) string {
	if i := strings.Index(out, "FAILURES"); i >= 0 {
		out = out[i:]
	}
	if len(out) > 30000 {
		out = out[:30000] + "\n…"
	}
	return out
}

// deleteTopics deletes, when the test ends, every topic and consumer group
// the processes made (their names start with prefix).
func deleteTopics(t *testing.T, prefix string) {
	t.Helper()
	adm := testenv.Admin(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		listed, err := adm.ListTopics(ctx)
		if err != nil {
			t.Logf("list topics: %v", err)
			return
		}
		var left []string
		for _, name := range listed.Names() {
			if strings.HasPrefix(name, prefix) {
				left = append(left, name)
			}
		}
		if len(left) > 0 {
			if _, err := adm.DeleteTopics(ctx, left...); err != nil {
				t.Logf("delete topics %v: %v", left, err)
			}
		}
		groups, err := adm.ListGroups(ctx)
		if err != nil {
			t.Logf("list groups: %v", err)
			return
		}
		var ours []string
		for _, g := range groups.Groups() {
			if strings.HasPrefix(g, prefix) {
				ours = append(ours, g)
			}
		}
		if len(ours) > 0 {
			if _, err := adm.DeleteGroups(ctx, ours...); err != nil {
				t.Logf("delete groups %v: %v", ours, err)
			}
		}
	})
}
