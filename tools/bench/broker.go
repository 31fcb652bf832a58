package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// broker is a private Kafka broker for the checkout benchmark: the systems
// it compares use Keel's fixed topic and consumer-group names, and its JVM's
// CPU is then the systems' alone, not shared with other tests on the
// stack's broker.
type broker struct {
	addr string
	cmd  *exec.Cmd
	dir  string
	adm  *kadm.Client
	cl   *kgo.Client
	done chan struct{}
}

// kafkaLib is the stack's broker classpath (deploy/local/stack.sh fetches
// it into $KEEL_STACK_DIR/kafka/lib).
func kafkaLib() (string, error) {
	dir := os.Getenv("KEEL_STACK_DIR")
	if dir == "" {
		dir = ".stack"
	}
	lib := filepath.Join(dir, "kafka", "lib")
	if _, err := os.Stat(lib); err != nil {
		return "", fmt.Errorf("no Kafka classpath at %s (run `make stack`, or set KEEL_STACK_DIR to the stack's folder): %w", lib, err)
	}
	return lib, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startBroker formats and starts a single-node KRaft broker in dir with
// the stack's settings (stack.sh: heap, GC, server properties) on free
// ports, and waits until it answers.
func startBroker(ctx context.Context, dir string) (*broker, error) {
	lib, err := kafkaLib()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	props := filepath.Join(dir, "server.properties")
	conf := strings.Join([]string{
		"process.roles=broker,controller", "node.id=1",
		fmt.Sprintf("controller.quorum.voters=1@127.0.0.1:%d", cport),
		fmt.Sprintf("listeners=PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", port, cport),
		fmt.Sprintf("advertised.listeners=PLAINTEXT://127.0.0.1:%d", port),
		"inter.broker.listener.name=PLAINTEXT", "controller.listener.names=CONTROLLER",
		"listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
		"log.dirs=" + filepath.Join(dir, "data"), "num.partitions=1", "default.replication.factor=1",
		"min.insync.replicas=1", "auto.create.topics.enable=false", "delete.topic.enable=true",
		"offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
		"transaction.state.log.min.isr=1", "share.coordinator.state.topic.replication.factor=1",
		"share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0", "log.retention.hours=168",
	}, "\n") + "\n"
	if err := os.WriteFile(props, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	format := exec.CommandContext(ctx, "java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Djava.awt.headless=true", "-cp", filepath.Join(lib, "*"), "kafka.tools.StorageTool", "format",
		"--cluster-id", base64.RawURLEncoding.EncodeToString(id), "--config", props)
	if out, err := format.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("format the bench broker's storage: %w\n%s", err, out)
	}
	out, err := os.Create(filepath.Join(dir, "logs", "kafka.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	args := []string{"-Xms512m", "-Xmx1g", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
		"-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true", "-Dkafka.logs.dir=" + filepath.Join(dir, "logs")}
	if l4j := filepath.Join(filepath.Dir(lib), "log4j2.xml"); fileExists(l4j) {
		args = append(args, "-Dlog4j2.configurationFile="+l4j)
	}
	args = append(args, "-cp", filepath.Join(lib, "*"), "kafka.Kafka", props)
	b := &broker{addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, done: make(chan struct{})}
	b.cmd = exec.Command("java", args...)
	b.cmd.Stdout, b.cmd.Stderr = out, out
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the bench broker: %w", err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	if b.cl, err = kgo.NewClient(kgo.SeedBrokers(b.addr)); err != nil {
		b.stop()
		return nil, err
	}
	b.adm = kadm.NewClient(b.cl)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := b.adm.ListBrokers(ctx); err == nil {
			return b, nil
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			b.stop()
			return nil, fmt.Errorf("the bench broker does not answer on %s (log %s): %w", b.addr, out.Name(), err)
		}
		select {
		case <-b.done:
			return nil, fmt.Errorf("the bench broker exited while starting (log %s)", out.Name())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func (b *broker) pid() int { return b.cmd.Process.Pid }

// reset deletes every topic and consumer group, so that the next system
// starts on an empty broker (the names are fixed), and waits until the
// topics are gone: a topic being deleted cannot be created again.
func (b *broker) reset(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for {
		tds, err := b.adm.ListTopics(ctx)
		if err != nil {
			return fmt.Errorf("list the bench broker's topics: %w", err)
		}
		groups, err := b.adm.ListGroups(ctx)
		if err != nil {
			return fmt.Errorf("list the bench broker's groups: %w", err)
		}
		if len(tds) == 0 && len(groups) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the bench broker still has topics %v and groups %v after a minute", tds.Names(), groups.Groups())
		}
		if len(groups) > 0 {
			if _, err := b.adm.DeleteGroups(ctx, groups.Groups()...); err != nil {
				return fmt.Errorf("delete groups: %w", err)
			}
		}
		if len(tds) > 0 {
			if _, err := b.adm.DeleteTopics(ctx, tds.Names()...); err != nil {
				return fmt.Errorf("delete topics: %w", err)
			}
		}
		time.Sleep(time.Second)
	}
}

// offsets sums the end offsets of the system's topics and of the broker's
// two internal logs: records and transaction markers written to the
// topics, consumer-offset commits, transaction-state records.
func (b *broker) offsets(ctx context.Context) (topics, consumerOffsets, txnState int64, err error) {
	tds, err := b.adm.ListTopicsWithInternal(ctx)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("list topics: %w", err)
	}
	if len(tds) == 0 {
		return 0, 0, 0, nil
	}
	ends, err := b.adm.ListEndOffsets(ctx, tds.Names()...)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("list end offsets: %w", err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil || o.Offset < 0 {
			return
		}
		switch o.Topic {
		case "__consumer_offsets":
			consumerOffsets += o.Offset
		case "__transaction_state":
			txnState += o.Offset
		default:
			if !strings.HasPrefix(o.Topic, "__") {
				topics += o.Offset
			}
		}
	})
	return topics, consumerOffsets, txnState, nil
}

func (b *broker) stop() {
	if b.cl != nil {
		b.cl.Close()
	}
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.done
	}
}
