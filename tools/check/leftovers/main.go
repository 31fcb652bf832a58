// Command leftovers proves that tests clean up after themselves: it lists
// the Kafka topics and PostgreSQL databases of the local stack, and with
// -since compares them with an earlier list, failing when any appeared.
// `make test` runs it around the tests:
//
//	go run ./tools/check/leftovers > before.txt
//	go test ...
//	go run ./tools/check/leftovers -since before.txt
//
// A list holds one "topic <name>" or "database <name>" per line, sorted.
// Internal topics (__consumer_offsets, …) and template databases are left
// out. On a broker shared with other runs, what another run creates
// meanwhile counts too: CI runs alone.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/testenv"
)

func main() {
	since := flag.String("since", "", "a list printed before: fail if anything appeared after it")
	flag.Parse()
	if err := run(*since); err != nil {
		fmt.Fprintln(os.Stderr, "leftovers:", err)
		os.Exit(1)
	}
}

func run(since string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now, err := list(ctx)
	if err != nil {
		return err
	}
	if since == "" {
		for _, s := range now {
			fmt.Println(s)
		}
		return nil
	}
	before, err := read(since)
	if err != nil {
		return err
	}
	left := added(before, now)
	// A deletion the broker accepted may show in its metadata a moment
	// later: look again for a few seconds before calling it left behind.
	for wait := 10; len(left) > 0 && wait > 0; wait-- {
		time.Sleep(time.Second)
		if now, err = list(ctx); err != nil {
			return err
		}
		left = added(before, now)
	}
	if len(left) > 0 {
		return fmt.Errorf("%d left behind by the tests (each test must delete what it creates, e.g. with t.Cleanup):\n  %s",
			len(left), strings.Join(left, "\n  "))
	}
	fmt.Printf("leftovers: none (%d topics and databases before and after)\n", len(now))
	return nil
}

// added returns what now holds and before (sorted) does not.
func added(before, now []string) []string {
	var out []string
	for _, s := range now {
		if _, found := slices.BinarySearch(before, s); !found {
			out = append(out, s)
		}
	}
	return out
}

// list returns the stack's topics and databases, sorted.
func list(ctx context.Context) ([]string, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(testenv.KafkaBrokers()...))
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var out []string
	for _, t := range topics.Names() {
		out = append(out, "topic "+t)
	}
	conn, err := pgx.Connect(ctx, testenv.PostgresURL())
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE NOT datistemplate`)
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	for _, d := range dbs {
		out = append(out, "database "+d)
	}
	slices.Sort(out)
	return out, nil
}

func read(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out, sc.Err()
}
