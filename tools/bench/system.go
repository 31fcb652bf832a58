package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// A system is one build of Keel's binaries that the checkout benchmark
// runs: the candidate (the working tree, or -candidate-commit) and the
// baseline (-baseline-commit), built and started the same way.
type system struct {
	label string // candidate or baseline
	rev   string // the commit, or "working tree"
	src   string // the source tree it was built from
	bin   string // its binaries
}

// relayContexts are deploy/local/keel.sh's KEEL_CONTEXTS: one keel-relay
// each, except a context whose service publishes its store itself.
var relayContexts = []string{"stock", "carts", "orders", "payments", "checkout", "catalog"}

// ownRelay is keel.sh's own_relay: the checkout service runs its relay.
func (s *system) ownRelay(ctx string) bool {
	return ctx == "checkout" && fileExists(filepath.Join(s.src, "services/checkout/cmd/checkout/main.go"))
}

// services lists the service binaries of the tree as keel.sh does
// (services/*/cmd/*, then projections/cmd/*), as package paths.
func (s *system) services() []string {
	var out []string
	for _, pat := range []string{"services/*/cmd/*/main.go", "projections/cmd/*/main.go"} {
		m, _ := filepath.Glob(filepath.Join(s.src, pat))
		for _, f := range m {
			rel, _ := filepath.Rel(s.src, filepath.Dir(f))
			out = append(out, "./"+filepath.ToSlash(rel))
		}
	}
	return out
}

// sourceAt extracts commit's tree into dir with git archive (no worktree
// is registered in the repository's shared .git) and returns the short
// hash.
func sourceAt(ctx context.Context, commit, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", commit+"^{commit}").Output()
	if err != nil {
		return "", fmt.Errorf("git rev-parse %s: %w", commit, err)
	}
	short := strings.TrimSpace(string(out))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	archive := exec.CommandContext(ctx, "git", "archive", "--format=tar", short)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", dir)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return "", err
	}
	untar.Stdin = pipe
	if err := untar.Start(); err != nil {
		return "", err
	}
	if err := archive.Run(); err != nil {
		return "", fmt.Errorf("git archive %s: %w", short, err)
	}
	if err := untar.Wait(); err != nil {
		return "", fmt.Errorf("untar %s: %w", short, err)
	}
	return short, nil
}

// buildSystem builds the tree's service binaries and keel-relay into bin.
func buildSystem(ctx context.Context, s *system) error {
	if err := os.MkdirAll(s.bin, 0o755); err != nil {
		return err
	}
	// -trimpath: the same sources in two trees share the build cache.
	args := append([]string{"build", "-trimpath", "-o", s.bin + string(filepath.Separator), "./events/cmd/keel-relay"}, s.services()...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = s.src
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the %s (%s): %w\n%s", s.label, s.rev, err, out)
	}
	return nil
}

// running is one start of a system: its processes on fresh databases and
// the bench broker.
type running struct {
	sys    *system
	prefix string            // of its database names
	dbs    map[string]string // store or service key (stock, projections...) → database name
	procs  []*proc
	urls   map[string]string // service → base URL
	// metrics are the /metrics URLs of every relay, the services' included
	metrics []string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// dbKey is the database a binary uses: keel.sh's keel_<name> default
// (keel-projections → projections).
func dbKey(name string) string { return strings.TrimPrefix(name, "keel-") }

// start creates fresh databases and starts the system the way keel.sh
// does: the relays first (ready on /healthz), then every service (ready on
// /readyz), with the environment keel.sh gives them; each on a free port
// and its own database (KEEL_DATABASE_URL), all on the bench broker.
func (s *system) start(ctx context.Context, b *broker, dir string) (*running, error) {
	r := &running{sys: s, prefix: "kb_" + randomSuffix() + "_", dbs: map[string]string{}, urls: map[string]string{}}
	names := map[string]bool{}
	for _, c := range relayContexts {
		names[c] = true
	}
	for _, p := range s.services() {
		names[dbKey(filepath.Base(p))] = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	admin, err := pgx.Connect(ctx, pgURL())
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s is not reachable: %w", redact(pgURL()), err)
	}
	defer admin.Close(context.Background())
	for _, k := range slices.Sorted(maps.Keys(names)) {
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+r.prefix+k); err != nil {
			r.stop()
			return nil, fmt.Errorf("create database %s: %w", r.prefix+k, err)
		}
		r.dbs[k] = r.prefix + k
	}
	base := []string{"KEEL_PG_URL=" + pgURL(), "KEEL_KAFKA_BROKERS=" + b.addr}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEEL_") {
			base = append(base, kv)
		}
	}
	var ready []string
	for _, c := range relayContexts {
		if s.ownRelay(c) {
			continue
		}
		port, err := freePort()
		if err != nil {
			r.stop()
			return nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if err := r.spawn("keel-relay/"+c, filepath.Join(s.bin, "keel-relay"), dir, append(slices.Clone(base),
			"KEEL_CONTEXT="+c, "KEEL_DATABASE_URL="+r.dbURL(c), "KEEL_METRICS_ADDR="+addr)); err != nil {
			r.stop()
			return nil, err
		}
		r.metrics = append(r.metrics, "http://"+addr+"/metrics")
		ready = append(ready, "http://"+addr+"/healthz")
	}
	if err := r.wait(ctx, ready); err != nil {
		r.stop()
		return nil, err
	}
	ready = nil
	for _, p := range s.services() {
		name := filepath.Base(p)
		port, err := freePort()
		if err != nil {
			r.stop()
			return nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		env := append(slices.Clone(base), "KEEL_HTTP_ADDR="+addr, "KEEL_DATABASE_URL="+r.dbURL(dbKey(name)))
		if name == "carts" {
			env = append(env, "KEEL_CATALOG_DATABASE_URL="+r.dbURL("catalog"))
		}
		if err := r.spawn(name, filepath.Join(s.bin, name), dir, env); err != nil {
			r.stop()
			return nil, err
		}
		r.urls[name] = "http://" + addr
		if s.ownRelay(name) {
			r.metrics = append(r.metrics, "http://"+addr+"/metrics")
		}
		ready = append(ready, "http://"+addr+"/readyz")
	}
	if err := r.wait(ctx, ready); err != nil {
		r.stop()
		return nil, err
	}
	for _, n := range []string{"stock", "carts", "checkout", "catalog"} {
		if r.urls[n] == "" {
			r.stop()
			return nil, fmt.Errorf("the %s (%s) has no %s service", s.label, s.rev, n)
		}
	}
	return r, nil
}

func (r *running) dbURL(key string) string {
	u, _ := url.Parse(pgURL())
	u.Path = "/" + r.prefix + key
	return u.String()
}

func (r *running) spawn(name, bin, dir string, env []string) error {
	log := filepath.Join(dir, strings.ReplaceAll(name, "/", "-")+".log")
	f, err := os.Create(log)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(bin)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: log}
	go func() { _ = cmd.Wait(); close(p.done) }()
	r.procs = append(r.procs, p)
	return nil
}

// wait polls every url until it answers 2xx (curl -f in keel.sh), failing when a process exits.
func (r *running) wait(ctx context.Context, urls []string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(2 * time.Minute)
	for _, u := range urls {
		for {
			res, err := client.Get(u)
			if err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode/100 == 2 { // keel-relay answers /healthz with 204
					break
				}
			}
			for _, p := range r.procs {
				select {
				case <-p.done:
					return fmt.Errorf("%s of the %s exited while starting (log %s)", p.name, r.sys.label, p.log)
				default:
				}
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s does not answer (%s): %v", u, r.sys.label, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// pids names the system's processes by pid.
func (r *running) pids() map[int]string {
	out := map[int]string{}
	for _, p := range r.procs {
		out[p.cmd.Process.Pid] = p.name
	}
	return out
}

// stop ends the processes (SIGTERM, then SIGKILL after 20 s) and drops
// the databases.
func (r *running) stop() {
	for _, p := range r.procs {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	for _, p := range r.procs {
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	for _, db := range r.dbs {
		dropDB(db)
	}
}
