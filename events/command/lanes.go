package command

import (
	"context"
	"slices"
)

// lane queues the commands of one set of streams. A lane is in at most one
// worker's batch at a time, which keeps its commands in arrival order.
type lane[S any] struct {
	key     string
	streams []string
	queue   []*pending[S]
	busy    bool // in a worker's batch
	queued  bool // in Handler.ready
}

type pending[S any] struct {
	cmd     Command[S]
	streams []string // the command's own, sorted
	digest  []byte   // of cmd.Fingerprint
	res     Result
	err     error
	done    chan struct{}
}

func (h *Handler[S]) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *Handler[S]) work() {
	defer h.workers.Done()
	for {
		select {
		case <-h.stop:
			return
		case <-h.wake:
		}
		for {
			lanes, batch := h.take()
			if len(batch) == 0 {
				break
			}
			h.run(lanes, batch)
			h.finish(lanes, batch)
		}
	}
}

// take claims ready lanes and their queued commands, up to MaxBatch.
func (h *Handler[S]) take() ([]*lane[S], []*pending[S]) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var lanes []*lane[S]
	var batch []*pending[S]
	for len(h.ready) > 0 && len(batch) < h.opts.MaxBatch {
		l := h.ready[0]
		h.ready = h.ready[1:]
		l.queued, l.busy = false, true
		n := min(len(l.queue), h.opts.MaxBatch-len(batch))
		batch = append(batch, l.queue[:n]...)
		l.queue = l.queue[n:]
		lanes = append(lanes, l)
	}
	if len(h.ready) > 0 {
		h.signal() // more work than one batch: wake another worker
	}
	return lanes, batch
}

// finish releases the lanes, requeues those with more commands, and answers
// the batch's callers.
func (h *Handler[S]) finish(lanes []*lane[S], batch []*pending[S]) {
	h.mu.Lock()
	for _, l := range lanes {
		l.busy = false
		switch {
		case len(l.queue) > 0 && !l.queued:
			l.queued = true
			h.ready = append(h.ready, l)
		case len(l.queue) == 0:
			delete(h.lanes, l.key)
		}
	}
	more := len(h.ready) > 0
	h.mu.Unlock()
	if more {
		h.signal()
	}
	for _, p := range batch {
		close(p.done)
		h.accepted.Done()
	}
}

func (h *Handler[S]) run(lanes []*lane[S], batch []*pending[S]) {
	var streams []string
	for _, l := range lanes {
		streams = append(streams, l.streams...)
	}
	slices.Sort(streams)
	streams = slices.Compact(streams)
	err := h.runBounded(streams, batch)
	if err == nil {
		return
	}
	if len(batch) == 1 {
		batch[0].err = err
		return
	}
	// One command's unexpected failure (not a rejection) must not fail its
	// neighbours: run each alone, each with a deadline of its own (a batch
	// that failed by running out of time has spent the one it had).
	h.m.batchFallbacks.Inc()
	for _, p := range batch {
		if e := h.runBounded(p.streams, []*pending[S]{p}); e != nil {
			p.err = e
		}
	}
}

// runBounded runs one transaction of batch within Options.Timeout.
func (h *Handler[S]) runBounded(streams []string, batch []*pending[S]) error {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.Timeout)
	defer cancel()
	return h.runBatch(ctx, streams, batch)
}
