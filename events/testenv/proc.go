package testenv

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Build builds the packages (paths from the workspace root, such as
// ./services/stock/cmd/stock) into a temporary folder and returns it: for
// tests that run the real binaries.
func Build(t testing.TB, pkgs ...string) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", append([]string{"build", "-o", bin + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = Root(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Root is the workspace root: the folder of go.work above the test's.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	Must(t, err, "working directory")
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("testenv: no go.work above the test's folder")
		}
		dir = filepath.Dir(dir)
	}
}

// FreeAddr is a free 127.0.0.1 port for a process to listen on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Must(t, err, "listen")
	defer l.Close()
	return l.Addr().String()
}

// Proc is a binary run by a test with its environment; its output goes to
// a log the test prints if it fails. It is killed when the test ends (and
// with the test binary, whatever happens). Not safe for concurrent use.
type Proc struct {
	Name, Bin string
	Env       []string
	// Ready is the URL that answers 2xx once the process serves.
	Ready string
	t     testing.TB
	log   string
	done  chan struct{}
}

// Start starts p's binary, waits (two minutes at most) until Ready
// answers 2xx, and registers the kill with t.Cleanup.
func (p *Proc) Start(t testing.TB) {
	t.Helper()
	p.t, p.log = t, filepath.Join(t.TempDir(), p.Name+".log")
	f, err := os.Create(p.log)
	Must(t, err, "log of %s", p.Name)
	cmd := exec.Command(p.Bin)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.Name, err)
	}
	p.done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%s log (end):\n%s", p.Name, p.Tail())
		}
	})
	cl := &http.Client{Timeout: 5 * time.Second}
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.done:
			t.Fatalf("%s exited before it was ready:\n%s", p.Name, p.Tail())
		default:
		}
		if res, err := cl.Get(p.Ready); err == nil {
			res.Body.Close()
			if res.StatusCode/100 == 2 {
				return
			}
		}
	}
	t.Fatalf("%s not ready after 2 minutes:\n%s", p.Name, p.Tail())
}

// Running fails the test if the process has exited.
func (p *Proc) Running(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("%s exited:\n%s", p.Name, p.Tail())
	default:
	}
}

// Tail is the end of the process's log.
func (p *Proc) Tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(bytes.TrimSpace(b))
}
