package command

import (
	"sync"
)

// cache keeps folded states; when full it forgets an arbitrary entry
// (map iteration order), which is cheap and good enough for hot keys that
// come straight back.
type cache[S any] struct {
	mu  sync.Mutex
	max int
	m   map[string]cached[S]
}

type cached[S any] struct {
	state   S
	version int64
}

func newCache[S any](n int) *cache[S] { return &cache[S]{max: n, m: map[string]cached[S]{}} }

func (c *cache[S]) get(stream string) (S, int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[stream]
	if ok {
		// Taken out while in use: Apply may modify it in place, and a
		// failed transaction must not leave a half-applied state behind.
		delete(c.m, stream)
	}
	return e.state, e.version, ok
}

func (c *cache[S]) put(stream string, s S, v int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[stream] = cached[S]{s, v}
}

func (c *cache[S]) drop(streams []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range streams {
		delete(c.m, s)
	}
}
