// Command keelctl is the operator's command line for Keel.
//
//	keelctl streams show --context stock STREAM      one stream's events, decoded
//	keelctl streams tail --context stock [--from POS] [--follow]
//	keelctl dlq list TOPIC.dlq
//	keelctl dlq show TOPIC.dlq [PARTITION:]OFFSET
//	keelctl dlq redrive TOPIC.dlq (--offset [P:]N | --all) [--dry-run] [--force]
//	keelctl dlq discard TOPIC.dlq --offset [P:]N --reason TEXT [--force]
//	keelctl topics ensure [--contexts a,b] [--partitions 6] [--replication 1]
//	keelctl topics describe [TOPIC...]
//	keelctl projections status [--json]
//	keelctl projections rebuild NAME [--yes]
//	keelctl replay --group G --topic T (--from-offset N | --from-time T) [--execute]
//
// Every command prints a human-readable table by default and JSON lines (one
// object per item) with --json. Addresses come from the environment the
// services read: KEEL_PG_URL (the PostgreSQL server; each context's store is
// the database keel_<context>, dead-letter state lives in keel_projections)
// and KEEL_KAFKA_BROKERS.
//
// Exit codes: 0 done, 1 failed, 2 usage error, 3 not found (unknown topic,
// offset, stream or projection), 4 refused (a dead letter already redriven
// or discarded, without --force; a rebuild without --yes or already
// running; a replay that would move a checkpoint forward).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/keel-commerce/keel/projections/all"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitNotFound = 3
	exitRefused  = 4
)

// Error kinds that choose the exit code.
var (
	errUsage    = errors.New("usage")
	errNotFound = errors.New("not found")
	errRefused  = errors.New("refused")
)

const usage = `keelctl: Keel's operator command line

  keelctl streams show --context CTX STREAM        events of one stream, decoded to JSON
  keelctl streams tail --context CTX [--from TX/GLOBAL] [--follow]
                                                   the store's global log
  keelctl dlq list TOPIC.dlq                       dead letters with origin, error, state
  keelctl dlq show TOPIC.dlq [P:]OFFSET            one dead letter: headers and payload
  keelctl dlq redrive TOPIC.dlq (--offset [P:]N | --all) [--dry-run] [--force]
  keelctl dlq discard TOPIC.dlq --offset [P:]N --reason TEXT [--force]
  keelctl topics ensure [--contexts LIST] [--partitions N] [--replication N]
  keelctl topics describe [TOPIC...]
  keelctl projections status                       each projection's copies and its live builder's lag
  keelctl projections rebuild NAME [--yes]         rebuild from the event stores into a new copy, then switch
  keelctl replay --group G --topic T (--from-offset N | --from-time RFC3339)
                 [--partition P] [--database-url URL | --context C] [--execute] [--allow-forward]
                                                   move a consumer group's checkpoints back (dry run by default)

Every command takes --json (JSON lines instead of a table).
Environment: KEEL_PG_URL (server; stores are keel_<context>, projections and
dead-letter state keel_projections), KEEL_KAFKA_BROKERS (comma-separated),
KEEL_TOPIC_PREFIX (prepended to topic and group names, as the services do).
Exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 refused.

projections status: every projection with a copy (or known to this binary):
the active copy (schema, generation, when activated), a copy being rebuilt
(events read of the total), and the live builder's lag (consumer group
projection.<name>): per topic, the end offsets a read-committed consumer
reaches minus the builder's checkpoints (transaction markers take offsets
too, so this is an upper bound), and the age of the oldest record not yet
applied.

projections rebuild: reads the projection's sources' event stores from the
start (keel_<context>, or --store CONTEXT=URL) into a new copy while the
live copy keeps serving, catches up with the stores' tail and switches the
new copy in atomically. Nothing is sent to any service. It asks before it
starts unless --yes. A rebuild that stopped (crash, Ctrl-C) resumes from
its last flush when run again.

replay: re-runs a topic range for a consumer group by moving its
checkpoints (consumer_checkpoints, in the group's database: keel_projections
for projection.* groups, keel_checkout for checkout-saga, keel_<context> for
<context>-commands; else --context or --database-url) back to an offset or
to the first record at or after a time. Without --execute it only prints,
per partition, the checkpoint, the new offset and how many records would be
re-run. With --execute it moves them in one transaction; it never moves one
forward (skipping records) unless --allow-forward. Keel's consumers apply
each event once: projections skip an event at or below the version their
copy holds for its stream; the saga decides nothing twice (every input is
idempotent against its state, and its commands carry fixed ids); the
command consumers dedupe by command id. So a replay re-runs handlers
without repeating their effects: it repairs what a handler missed or did wrong. The running
consumer notices at its next commit: its checkpoint compare-and-set fails,
it re-reads the row and seeks there (an idle consumer, at its next record
or restart).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env is what a command runs with: its input, output and the process
// environment.
type env struct {
	in          io.Reader
	out, errOut io.Writer
	getenv      func(string) string
	json        bool // print JSON lines (set by the command from --json)
	// inTerminal and errTerminal: stdin and stderr are terminals (a
	// question can be asked; progress is redrawn in place).
	inTerminal, errTerminal bool
	// projections is the registry projections are looked up in.
	projections func() []readmodel.Projection
}

// run executes one keelctl command line and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runEnv(ctx, args, stdout, stderr, os.Getenv)
}

// runEnv is run with the environment read through getenv.
func runEnv(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return runWith(ctx, &env{in: os.Stdin, out: stdout, errOut: stderr, getenv: getenv,
		inTerminal: isTerminal(os.Stdin), errTerminal: isTerminal(stderr), projections: all.All}, args)
}

// isTerminal reports whether f is an *os.File on a character device.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	st, err := file.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// runWith executes args in e and returns the exit code.
func runWith(ctx context.Context, e *env, args []string) int {
	stdout, stderr := e.out, e.errOut
	err := dispatch(ctx, e, args)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "keelctl: %v\n\n%s", err, usage)
		return exitUsage
	case errors.Is(err, errNotFound):
		fmt.Fprintf(stderr, "keelctl: %v\n", err)
		return exitNotFound
	case errors.Is(err, errRefused):
		fmt.Fprintf(stderr, "keelctl: %v\n", err)
		return exitRefused
	default:
		fmt.Fprintf(stderr, "keelctl: %v\n", err)
		return exitFailed
	}
}

func dispatch(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command", errUsage)
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		return flag.ErrHelp
	}
	if args[0] == "replay" {
		return replay(ctx, e, args[1:])
	}
	if len(args) < 2 {
		return fmt.Errorf("%w: %q needs a subcommand", errUsage, args[0])
	}
	group, cmd, rest := args[0], args[1], args[2:]
	switch group + " " + cmd {
	case "streams show":
		return streamsShow(ctx, e, rest)
	case "streams tail":
		return streamsTail(ctx, e, rest)
	case "dlq list":
		return dlqList(ctx, e, rest)
	case "dlq show":
		return dlqShow(ctx, e, rest)
	case "dlq redrive":
		return dlqRedrive(ctx, e, rest)
	case "dlq discard":
		return dlqDiscard(ctx, e, rest)
	case "topics ensure":
		return topicsEnsure(ctx, e, rest)
	case "topics describe":
		return topicsDescribe(ctx, e, rest)
	case "projections status":
		return projectionsStatus(ctx, e, rest)
	case "projections rebuild":
		return projectionsRebuild(ctx, e, rest)
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, group+" "+cmd)
}

// parse parses flags and positional arguments in any order ("show X --json"
// as well as "show --json X"), and checks the positional count.
func parse(fs *flag.FlagSet, args []string, minPos, maxPos int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) < minPos || (maxPos >= 0 && len(pos) > maxPos) {
		want := fmt.Sprint(minPos)
		if maxPos != minPos {
			want = fmt.Sprintf("%d to %d", minPos, maxPos)
			if maxPos < 0 {
				want = fmt.Sprintf("at least %d", minPos)
			}
		}
		return nil, fmt.Errorf("%w: %s takes %s argument(s), got %d", errUsage, fs.Name(), want, len(pos))
	}
	return pos, nil
}

// brokers is KEEL_KAFKA_BROKERS, or the local stack's broker.
func (e *env) brokers() []string {
	if b := strings.TrimSpace(e.getenv("KEEL_KAFKA_BROKERS")); b != "" {
		return strings.Split(b, ",")
	}
	return []string{"127.0.0.1:9092"}
}

// databaseURL is explicit if set, else KEEL_PG_URL (or the local stack's
// server) with its database replaced by db.
func (e *env) databaseURL(explicit, db string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	server := e.getenv("KEEL_PG_URL")
	if server == "" {
		server = "postgres://keel:keel@127.0.0.1:5432/postgres"
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("KEEL_PG_URL: %w", err)
	}
	u.Path = "/" + db
	return u.String(), nil
}

// topicPrefix is KEEL_TOPIC_PREFIX: what the services (tests, shared
// brokers) prepend to every topic and consumer group name.
func (e *env) topicPrefix() string { return strings.TrimSpace(e.getenv("KEEL_TOPIC_PREFIX")) }

// redact hides a URL's password for messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// table writes aligned columns to w.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		c = strings.ReplaceAll(strings.ReplaceAll(c, "\t", " "), "\n", " ")
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		fmt.Fprint(t.tw, c)
	}
	fmt.Fprintln(t.tw)
}

func (t *table) flush() { _ = t.tw.Flush() }

// jsonLine writes v as one line of JSON.
func jsonLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// truncate shortens s to n runes with an ellipsis.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
