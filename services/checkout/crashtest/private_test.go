package crashtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// privatePG is a PostgreSQL cluster of the test's own (initdb into a
// temporary folder, Debian's binaries), so that it can be stopped and
// started under the running services without touching the shared server
// every other test uses. As root, it runs as the postgres user.
type privatePG struct {
	t          *testing.T
	bin, dir   string
	port       int
	asPostgres bool
}

// pgBin is where Debian's postgresql package puts the server's binaries.
const pgBin = "/usr/lib/postgresql/15/bin"

func startPrivatePG(t *testing.T) *privatePG {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "postgres")); err != nil {
		t.Skipf("no PostgreSQL server binaries in %s: %v", pgBin, err)
	}
	dir, err := os.MkdirTemp("", "keel-outage-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p := &privatePG{t: t, bin: pgBin, dir: dir, port: freePort(t), asPostgres: os.Getuid() == 0}
	t.Cleanup(func() {
		_ = p.run("pg_ctl", "-D", p.data(), "-m", "immediate", "-w", "stop")
		_ = os.RemoveAll(dir)
	})
	if p.asPostgres { // initdb refuses to run as root
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root and no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.run("initdb", "-D", p.data(), "-U", "keel", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v", err)
	}
	p.start()
	return p
}

func (p *privatePG) data() string { return filepath.Join(p.dir, "data") }

// URL is the server's admin URL (trust authentication: any password).
func (p *privatePG) URL() string {
	return fmt.Sprintf("postgres://keel:keel@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

func (p *privatePG) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	if p.asPostgres {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(p.bin, name)}, args...)...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %v: %w\n%s", name, args, err, out)
	}
	return nil
}

// start starts the server and waits until it accepts connections.
func (p *privatePG) start() {
	p.t.Helper()
	// Durability is not what this test is about: no fsync.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c full_page_writes=off",
		p.port, p.dir)
	if err := p.run("pg_ctl", "-D", p.data(), "-l", filepath.Join(p.dir, "server.log"), "-o", opts, "-w", "-t", "120", "start"); err != nil {
		p.t.Fatalf("start private PostgreSQL: %v", err)
	}
}

// stop shuts the server down the way an operator's restart does (fast:
// every session ends with FATAL 57P01 admin shutdown).
func (p *privatePG) stop() {
	p.t.Helper()
	if err := p.run("pg_ctl", "-D", p.data(), "-m", "fast", "-w", "-t", "120", "stop"); err != nil {
		p.t.Fatalf("stop private PostgreSQL: %v", err)
	}
}

// privateKafka is a single KRaft broker of the test's own, from the same
// jars as the shared one ($KEEL_STACK_DIR/kafka/lib, or the repository's
// .stack/kafka/lib that `make stack` fetches), with its own ports and data.
type privateKafka struct {
	t                  *testing.T
	dir, lib, conf     string
	port               int
	cmd                *exec.Cmd
	done               chan struct{}
	starts             int
	logFile, clusterID string
}

func startPrivateKafka(t *testing.T, repo string) *privateKafka {
	t.Helper()
	stack := os.Getenv("KEEL_STACK_DIR")
	if stack == "" {
		stack = filepath.Join(repo, ".stack")
	}
	lib := filepath.Join(stack, "kafka", "lib")
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("no Kafka jars in %s (run `make stack`, or set KEEL_STACK_DIR): %v", lib, err)
	}
	if _, err := exec.LookPath("java"); err != nil {
		t.Skipf("no java: %v", err)
	}
	dir := t.TempDir()
	k := &privateKafka{t: t, dir: dir, lib: lib, conf: filepath.Join(dir, "server.properties"), port: freePort(t),
		logFile: filepath.Join(dir, "kafka.log")}
	controller := freePort(t)
	conf := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:%[2]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=%[3]s
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
`, k.port, controller, filepath.Join(dir, "data"))
	if err := os.WriteFile(k.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	k.clusterID = base64.RawURLEncoding.EncodeToString(id[:])
	format := k.java("-Xmx256m", "kafka.tools.StorageTool", "format", "--ignore-formatted", "--cluster-id", k.clusterID, "--config", k.conf)
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("format Kafka storage: %v\n%s", err, out)
	}
	t.Cleanup(k.stop)
	k.start()
	return k
}

func (k *privateKafka) java(args ...string) *exec.Cmd {
	return exec.Command("java", append([]string{"-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
		"-cp", filepath.Join(k.lib, "*")}, args...)...)
}

func (k *privateKafka) Brokers() string { return fmt.Sprintf("127.0.0.1:%d", k.port) }

// start starts the broker and waits until it answers metadata requests.
func (k *privateKafka) start() {
	k.t.Helper()
	f, err := os.OpenFile(k.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		k.t.Fatal(err)
	}
	cmd := k.java("-Xms256m", "-Xmx512m", "kafka.Kafka", k.conf)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		k.t.Fatalf("start private Kafka: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	k.cmd, k.done = cmd, done
	k.starts++
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()))
	if err != nil {
		k.t.Fatal(err)
	}
	defer cl.Close()
	for end := time.Now().Add(2 * time.Minute); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := cl.Ping(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-done:
			k.t.Fatalf("private Kafka exited while starting:\n%s", tailFile(k.logFile))
		default:
		}
		if time.Now().After(end) {
			k.t.Fatalf("private Kafka not answering after 2 minutes: %v\n%s", err, tailFile(k.logFile))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop shuts the broker down (SIGTERM: a controlled shutdown), killing it
// if it takes more than 30 s.
func (k *privateKafka) stop() {
	if k.cmd == nil {
		return
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(30 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.done
	}
	k.cmd = nil
}

func freePort(t *testing.T) int {
	t.Helper()
	addr := freeAddr(t)
	p, err := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func tailFile(name string) string {
	b, _ := os.ReadFile(name)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
