package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/keel-commerce/keel/services/payments/gateway"
)

// Durable is a Sim whose books outlive its process, as a real provider's
// outlive the payments service: crash tests kill the service with SIGKILL,
// and a provider that forgot its authorizations on restart would refuse
// every later capture or void of them. The books (attempts, recorded
// outcomes, authorizations and their amounts) are written to a file after
// every call, before the answer is returned, replacing it atomically
// (write, then rename); New loads them back. A kill between the provider
// acting and the file being written loses that act together with its
// answer, which the caller never saw: it retries under the same key and
// the provider acts then, once.
//
// Safe for concurrent use. A file write per call: a test double, not a
// provider to put load on.
type Durable struct {
	*Sim
	path string
	mu   sync.Mutex // one save at a time
}

// books is the file's content.
type books struct {
	Attempts map[string]uint64         `json:"attempts"`
	Done     map[string]gateway.Result `json:"done"`
	Charges  map[string]int            `json:"charges"`
	// Auths: reference → amount, captured, refunded.
	Auths map[string][3]int64 `json:"auths"`
}

// NewDurable returns a simulator keeping its books in the file at path,
// loading them when the file exists.
func NewDurable(cfg Config, path string) (*Durable, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("sim: books: %w", err)
	default:
		var bk books
		if err := json.Unmarshal(b, &bk); err != nil {
			return nil, fmt.Errorf("sim: books %s: %w", path, err)
		}
		for k, v := range bk.Attempts {
			s.attempts[k] = v
		}
		for k, v := range bk.Done {
			s.done[k] = v
		}
		for k, v := range bk.Charges {
			s.charges[k] = v
		}
		for k, v := range bk.Auths {
			s.auths[k] = authorization{amount: v[0], captured: v[1], refunded: v[2]}
		}
	}
	return &Durable{Sim: s, path: path}, nil
}

// save writes the books as they are now.
func (d *Durable) save() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Sim.mu.Lock()
	bk := books{Attempts: d.attempts, Done: d.done, Charges: d.charges, Auths: make(map[string][3]int64, len(d.auths))}
	for k, a := range d.auths {
		bk.Auths[k] = [3]int64{a.amount, a.captured, a.refunded}
	}
	b, err := json.Marshal(bk)
	d.Sim.mu.Unlock()
	if err != nil {
		return fmt.Errorf("sim: books: %w", err)
	}
	tmp := d.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("sim: books: %w", err)
	}
	if err := os.Rename(tmp, d.path); err != nil {
		return fmt.Errorf("sim: books: %w", err)
	}
	return nil
}

// kept runs a call and saves the books before answering.
func (d *Durable) kept(r gateway.Result, err error) (gateway.Result, error) {
	if serr := d.save(); serr != nil {
		return gateway.Result{}, serr
	}
	return r, err
}

// Authorize is Sim.Authorize with the books saved.
func (d *Durable) Authorize(ctx context.Context, req gateway.AuthorizeRequest) (gateway.Result, error) {
	return d.kept(d.Sim.Authorize(ctx, req))
}

// Capture is Sim.Capture with the books saved.
func (d *Durable) Capture(ctx context.Context, req gateway.CaptureRequest) (gateway.Result, error) {
	return d.kept(d.Sim.Capture(ctx, req))
}

// Void is Sim.Void with the books saved.
func (d *Durable) Void(ctx context.Context, req gateway.VoidRequest) (gateway.Result, error) {
	return d.kept(d.Sim.Void(ctx, req))
}

// Refund is Sim.Refund with the books saved.
func (d *Durable) Refund(ctx context.Context, req gateway.RefundRequest) (gateway.Result, error) {
	return d.kept(d.Sim.Refund(ctx, req))
}

var _ gateway.Gateway = (*Durable)(nil)
