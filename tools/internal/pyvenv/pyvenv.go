// Package pyvenv gives tests the Python tools they run (the example
// consumer's libraries, schemathesis): a virtualenv under the stack folder
// holding a pinned requirements file, made on first use and reused while
// the file is unchanged.
package pyvenv

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Python returns the python of the virtualenv name under the stack folder
// (root/.stack, or $KEEL_STACK_DIR) with requirements installed. A marker
// holds the requirements' hash, so a re-run costs nothing and a changed
// file rebuilds the virtualenv; a lock file serializes test binaries that
// ask at once.
func Python(t testing.TB, root, name, requirements string) string {
	t.Helper()
	stack := os.Getenv("KEEL_STACK_DIR")
	if stack == "" {
		stack = filepath.Join(root, ".stack")
	}
	if err := os.MkdirAll(stack, 0o755); err != nil {
		t.Fatal(err)
	}
	venv := filepath.Join(stack, name)
	py := filepath.Join(venv, "bin", "python")
	marker := filepath.Join(venv, ".keel-requirements")

	req, err := os.ReadFile(requirements)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(req)
	want := hex.EncodeToString(sum[:])

	lock, err := os.OpenFile(filepath.Join(stack, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck

	if got, err := os.ReadFile(marker); err == nil && string(got) == want {
		if _, err := os.Stat(py); err == nil {
			return py
		}
	}
	python3, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is not on PATH: %s needs it", name)
	}
	t.Logf("creating %s with %s (first run only)", venv, requirements)
	run(t, python3, "-m", "venv", "--clear", venv)
	run(t, py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirements)
	if err := os.WriteFile(marker, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	return py
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
