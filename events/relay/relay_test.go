package relay_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/store/storetest"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/wire"
)

// buildRelay compiles cmd/keel-relay once per test binary.
var buildRelay = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "keel-relay-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "keel-relay")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/keel-commerce/keel/events/cmd/keel-relay").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build keel-relay: %v\n%s", err, out)
	}
	return bin, nil
})

type relayProc struct {
	t    *testing.T
	bin  string
	env  []string
	cmd  *exec.Cmd
	logs *os.File
}

func (p *relayProc) start() {
	p.t.Helper()
	cmd := exec.Command(p.bin)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start relay: %v", err)
	}
	p.cmd = cmd
}

func (p *relayProc) stop(sig syscall.Signal) {
	p.t.Helper()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// TestRelaySurvivesKill9 appends 10,000+ events across 120 streams while
// the relay process is killed with SIGKILL at 20+ random moments and
// restarted. Afterwards every event is in Kafka, and within each key the
// versions never skip or go back beyond a resent tail.
func TestRelaySurvivesKill9(t *testing.T) {
	bin, err := buildRelay()
	if err != nil {
		t.Fatal(err)
	}
	dbURL := testenv.DatabaseURL(t)
	topic := testenv.Topic(t, 6)
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st, err := pg.New(context.Background(), pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)

	logs, err := os.CreateTemp("", "keel-relay-*.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close(); os.Remove(logs.Name()) })
	p := &relayProc{t: t, bin: bin, logs: logs, env: []string{
		"KEEL_CONTEXT=test", "KEEL_DATABASE_URL=" + dbURL, "KEEL_TOPIC=" + topic,
		"KEEL_KAFKA_BROKERS=" + testenv.KafkaBrokers()[0], "KEEL_METRICS_ADDR=",
	}}
	p.start()
	t.Cleanup(func() { p.stop(syscall.SIGKILL) })

	const streams, minEvents, minKills = 120, 10_000, 20
	var appended atomic.Int64
	var kills atomic.Int32
	want := sync.Map{} // event id -> stream
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for appended.Load() < minEvents || kills.Load() < minKills {
				evs := storetest.Events(1 + r.IntN(3))
				stream := fmt.Sprintf("order-%03d", r.IntN(streams))
				if _, err := st.Append(ctx, stream, store.Any, evs); err != nil {
					errc <- err
					return
				}
				for _, e := range evs {
					want.Store(e.ID.String(), stream)
				}
				appended.Add(int64(len(evs)))
			}
		}()
	}
	// The killer: SIGKILL at random moments, restart at once.
	r := rand.New(rand.NewPCG(42, 42))
	for kills.Load() < minKills || appended.Load() < minEvents {
		time.Sleep(time.Duration(30+r.IntN(220)) * time.Millisecond)
		p.stop(syscall.SIGKILL)
		kills.Add(1)
		p.start()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	total := int(appended.Load())
	t.Logf("appended %d events across %d streams; relay killed %d times", total, streams, kills.Load())

	// Read the topic until every appended event is there.
	// Read committed, as every Keel consumer does: an attempt the relay
	// aborted (killed mid-transaction) is not there.
	cl := testenv.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	seen := map[string]int{}
	maxVer := map[string]int64{}
	keyPart := map[string]int32{}
	records := 0
	deadline := time.Now().Add(2 * time.Minute)
	for len(seen) < total {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d events reached Kafka", len(seen), total)
		}
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		fs.EachError(func(tp string, p int32, err error) {
			if pctx.Err() == nil {
				t.Fatalf("fetch %s/%d: %v", tp, p, err)
			}
		})
		fs.EachRecord(func(rec *kgo.Record) {
			records++
			ev, err := wire.Event(rec)
			if err != nil {
				t.Fatalf("record %d/%d: %v", rec.Partition, rec.Offset, err)
			}
			key := string(rec.Key)
			if p, ok := keyPart[key]; ok && p != rec.Partition {
				t.Fatalf("key %s in partitions %d and %d", key, p, rec.Partition)
			}
			keyPart[key] = rec.Partition
			// A resend repeats a tail (version ≤ the highest seen); anything
			// else must be the next version: no gaps, no reordering.
			if ev.Version > maxVer[key]+1 {
				t.Fatalf("stream %s: version %d after %d (offset %d): an event is missing or out of order", key, ev.Version, maxVer[key], rec.Offset)
			}
			maxVer[key] = max(maxVer[key], ev.Version)
			if s, ok := want.Load(ev.ID.String()); !ok || s.(string) != key {
				t.Fatalf("record %s in Kafka was never appended to %s", ev.ID, key)
			}
			seen[ev.ID.String()]++
		})
	}
	dups := records - len(seen)
	t.Logf("%d records in Kafka for %d events: %d resent after kills", records, len(seen), dups)
	p.stop(syscall.SIGTERM)
}
