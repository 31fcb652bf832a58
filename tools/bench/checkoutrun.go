package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"
)

// checkoutSession is the checkout benchmark's state over the bench: the
// systems it compares, built once, the private broker, and every run's
// results.
type checkoutSession struct {
	dir     string
	systems []*system // the candidate, then the baseline if any
	broker  *broker
	// results[run][system] is that run's light and target rate
	results [][]checkoutPair
	notes   []string
	failed  bool
}

type checkoutPair struct{ low, high *checkoutResult }

// setupCheckout builds the candidate (the working tree, or
// -candidate-commit) and the baseline (-baseline-commit) and starts the
// bench broker.
func setupCheckout(ctx context.Context, cfg config) (*checkoutSession, error) {
	dir, err := os.MkdirTemp("", "keel-checkout-bench-")
	if err != nil {
		return nil, err
	}
	s := &checkoutSession{dir: dir}
	cand := &system{label: "candidate", rev: "working tree", src: ".", bin: filepath.Join(dir, "candidate", "bin")}
	if cfg.candidateCommit != "" {
		cand.src = filepath.Join(dir, "candidate", "src")
		if cand.rev, err = sourceAt(ctx, cfg.candidateCommit, cand.src); err != nil {
			s.close()
			return nil, err
		}
	}
	s.systems = append(s.systems, cand)
	if cfg.baselineCommit != "" {
		base := &system{label: "baseline", src: filepath.Join(dir, "baseline", "src"), bin: filepath.Join(dir, "baseline", "bin")}
		if base.rev, err = sourceAt(ctx, cfg.baselineCommit, base.src); err != nil {
			s.close()
			return nil, err
		}
		s.systems = append(s.systems, base)
	}
	for _, sys := range s.systems {
		t := time.Now()
		if err := buildSystem(ctx, sys); err != nil {
			s.close()
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "checkout: built the %s (%s) in %.1fs\n", sys.label, sys.rev, time.Since(t).Seconds())
	}
	t := time.Now()
	if s.broker, err = startBroker(ctx, filepath.Join(dir, "kafka")); err != nil {
		s.close()
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "checkout: bench broker on %s (pid %d) in %.1fs\n", s.broker.addr, s.broker.pid(), time.Since(t).Seconds())
	return s, nil
}

// run measures every system once, the baseline first in odd runs and
// last in even ones, so that a drift of the machine's load over the
// session weighs on both alike. Each system starts on fresh databases and
// an emptied broker, gets its SKUs stocked, runs the light rate and then
// the target rate, and stops.
func (s *checkoutSession) run(ctx context.Context, cfg config, r int, benchID string) error {
	pairs := make([]checkoutPair, len(s.systems))
	order := []int{0}
	if len(s.systems) == 2 {
		order = []int{1, 0}
		if r%2 == 0 {
			order = []int{0, 1}
		}
	}
	for _, i := range order {
		sys := s.systems[i]
		if err := s.broker.reset(ctx); err != nil {
			return err
		}
		t := time.Now()
		rs, err := sys.start(ctx, s.broker, filepath.Join(s.dir, fmt.Sprintf("run%d-%s", r, sys.label)))
		if err != nil {
			s.failed = true
			return err
		}
		id := fmt.Sprintf("%s-r%d-%s", benchID, r, sys.label[:4])
		err = prepareCheckout(ctx, rs, id)
		if err == nil {
			err = settleStocking(ctx, rs, s.broker)
		}
		fmt.Fprintf(os.Stderr, "checkout: the %s (%s) started and stocked in %.1fs\n", sys.label, sys.rev, time.Since(t).Seconds())
		if err == nil && cfg.checkoutLowRate > 0 {
			var res checkoutResult
			res, err = benchCheckout(ctx, cfg, rs, s.broker, cfg.checkoutLowRate, id+"-lo")
			if err == nil {
				pairs[i].low = &res
				s.note(r, sys, cfg.checkoutLowRate, res)
			}
		}
		if err == nil {
			var res checkoutResult
			res, err = benchCheckout(ctx, cfg, rs, s.broker, cfg.checkoutRate, id+"-hi")
			if err == nil {
				pairs[i].high = &res
				s.note(r, sys, cfg.checkoutRate, res)
			}
		}
		rs.stop()
		if err != nil {
			s.failed = true
			return fmt.Errorf("%s (%s): %w", sys.label, sys.rev, err)
		}
	}
	s.results = append(s.results, pairs)
	return nil
}

func (s *checkoutSession) note(r int, sys *system, rate float64, res checkoutResult) {
	s.notes = append(s.notes, fmt.Sprintf("run %d, %s at %.0f/s: %s", r, sys.label, rate, cpuShares(res.cpu, res.wall)))
	fmt.Fprintf(os.Stderr, "  %s at %.0f/s: outcomes %v\n", sys.label, rate, res.rep.Outcomes)
}

// checkoutTargets are the targets for the candidate at the target
// rate.
var checkoutTargets = map[string]struct {
	target string
	pass   func(float64) bool
}{
	"checkout_completed_per_s": {">=500", atLeast(500)},
	"checkout_p99_ms":          {"<=250", atMost(250)},
}

// emit adds every run's figures: the candidate's (checkout_*,
// checkout_low_* at the light rate), the baseline's (checkout_base_*) and
// the candidate/baseline ratio of each run (checkout_ratio_*), and the
// candidate's events/s next to the same bench's 1-row INSERT baseline.
func (s *checkoutSession) emit(fs *figures, cfg config, base1 float64) {
	type rate struct {
		tag  string
		rate float64
		low  bool
	}
	var rates []rate
	if cfg.checkoutLowRate > 0 {
		rates = append(rates, rate{"low_", cfg.checkoutLowRate, true})
	}
	rates = append(rates, rate{"", cfg.checkoutRate, false})
	pick := func(p checkoutPair, low bool) *checkoutResult {
		if low {
			return p.low
		}
		return p.high
	}
	for si, sys := range s.systems {
		tag := ""
		if sys.label == "baseline" {
			tag = "base_"
		}
		for _, rt := range rates {
			for _, pairs := range s.results {
				res := pick(pairs[si], rt.low)
				for i, m := range res.metrics(rt.low) {
					label := m.label
					if i == 0 {
						label = fmt.Sprintf("Checkouts %s, %.0f/s offered: %s", sys.label, rt.rate, m.label)
					}
					key := "checkout_" + tag + rt.tag + m.name
					t := checkoutTargets[key]
					fs.put(key, label, m.unit, t.target, t.pass, m.v)
				}
				if si == 0 && !rt.low && base1 > 0 {
					for _, m := range res.metrics(false) {
						if m.name == "events_per_s" {
							fs.put("checkout_baseline_rows_per_s", "  the bench's 1-row INSERT baseline", "rows/s", "", nil, base1)
							fs.put("checkout_events_ratio", "  events/s as a ratio to that baseline", "x", "", nil, m.v/base1)
						}
					}
				}
			}
		}
	}
	if len(s.systems) < 2 {
		return
	}
	for _, rt := range rates {
		for _, pairs := range s.results {
			cand, base := pick(pairs[0], rt.low).metrics(rt.low), pick(pairs[1], rt.low).metrics(rt.low)
			bv := map[string]float64{}
			for _, m := range base {
				bv[m.name] = m.v
			}
			first := true
			for _, m := range cand {
				b, ok := bv[m.name]
				if !m.ratio || !ok || b == 0 || math.IsInf(b, 0) || math.IsNaN(b) || math.IsInf(m.v, 0) {
					continue
				}
				label := m.label
				if first {
					label = fmt.Sprintf("Candidate/baseline, %.0f/s offered: %s", rt.rate, m.label)
					first = false
				}
				fs.put("checkout_ratio_"+rt.tag+m.name, label, "x", "", nil, m.v/b)
			}
		}
	}
}

// close stops the broker and removes the session's folder, unless a
// run failed: its processes' logs are kept there.
func (s *checkoutSession) close() {
	if s.broker != nil {
		s.broker.stop()
	}
	if s.failed {
		fmt.Fprintf(os.Stderr, "checkout: logs kept in %s\n", s.dir)
		return
	}
	_ = os.RemoveAll(s.dir)
}
