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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	root := repoRoot(t)
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
	bin := build(t, root)

	prefix := "apifuzz-" + strings.ToLower(ksuid.New().String()[:12]) + "."
	deleteTopics(t, prefix)
	dbs := map[string]string{}
	for _, s := range services {
		dbs[s.name] = testenv.DatabaseURL(t)
	}
	logs := t.TempDir()
	common := []string{"KEEL_KAFKA_BROKERS=" + strings.Join(testenv.KafkaBrokers(), ","), "KEEL_TOPIC_PREFIX=" + prefix,
		"KEEL_TOPIC_PARTITIONS=1", "KEEL_LOG_LEVEL=warn"}
	addrs := map[string]string{}
	free := freeAddrs(t, len(services))
	var procs []*proc
	for i, s := range services {
		addrs[s.name] = free[i]
		env := append(append([]string{}, common...), "KEEL_DATABASE_URL="+dbs[s.name], "KEEL_HTTP_ADDR="+addrs[s.name])
		if s.name == "carts" {
			env = append(env, "KEEL_CATALOG_DATABASE_URL="+dbs["catalog"])
		}
		p := &proc{t: t, name: s.name, bin: filepath.Join(bin, filepath.Base(s.pkg)), addr: addrs[s.name],
			log: filepath.Join(logs, s.name+".log"), env: append(env, s.env...)}
		// The catalog migrates the table carts reads prices from.
		if s.name == "carts" {
			procs[0].waitReady()
		}
		p.start()
		procs = append(procs, p)
	}
	for _, p := range procs {
		p.waitReady()
	}

	for _, p := range procs {
		t.Run(p.name, func(t *testing.T) {
			base := "http://" + p.addr
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
			t.Logf("schemathesis on %s: %s", p.name, time.Since(start).Round(time.Second))
			if err != nil {
				t.Errorf("schemathesis found failures in %s (%v):\n%s", p.name, err, failures(out.String()))
			}
			p.mustRun()
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

// repoRoot is the folder holding go.work.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Fatalf("repo root %s: %v", root, err)
	}
	return root
}

func build(t *testing.T, root string) string {
	t.Helper()
	bin := t.TempDir()
	args := []string{"build", "-o", bin + string(filepath.Separator)}
	for _, s := range services {
		args = append(args, s.pkg)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
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

// proc is one service process, killed when the test ends.
type proc struct {
	t                    *testing.T
	name, bin, addr, log string
	env                  []string
	cmd                  *exec.Cmd
	done                 chan struct{}
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.Create(p.log)
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd = exec.Command(p.bin)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.done = make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	p.t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// waitReady waits (a minute at most) for /readyz to answer 200.
func (p *proc) waitReady() {
	p.t.Helper()
	cl := &http.Client{Timeout: 5 * time.Second}
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		p.mustRun()
		if resp, err := cl.Get("http://" + p.addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	p.t.Fatalf("%s not ready after a minute:\n%s", p.name, p.tail())
}

// mustRun fails the test if the process has exited.
func (p *proc) mustRun() {
	p.t.Helper()
	select {
	case <-p.done:
		p.t.Fatalf("%s exited:\n%s", p.name, p.tail())
	default:
	}
}

// tail is the last lines of the process's log.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// freeAddrs picks n free local addresses, all held until all are picked
// so that no two are the same.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}
