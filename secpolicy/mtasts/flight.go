package mtasts

import (
	"context"
	"sync"
)

// flight coalesces concurrent calls with the same key into one execution
// (checklist STS17), like golang.org/x/sync/singleflight, but each caller
// stops waiting when its own context ends while the shared call goes on
// for the others.
type flight[T any] struct {
	mu    sync.Mutex
	calls map[string]*flightCall[T]
}

type flightCall[T any] struct {
	done    chan struct{}
	waiters int // callers that joined; guarded by flight.mu
	val     T
	err     error
}

// do runs fn once for all concurrent callers with key. fn runs in its own
// goroutine and must bound its own duration; do returns fn's results, or
// ctx's error when ctx ends first.
func (g *flight[T]) do(ctx context.Context, key string, fn func() (T, error)) (T, error) {
	if err := ctx.Err(); err != nil {
		var zero T
		return zero, err
	}
	g.mu.Lock()
	if g.calls == nil {
		g.calls = make(map[string]*flightCall[T])
	}
	c, ok := g.calls[key]
	if !ok {
		c = &flightCall[T]{done: make(chan struct{})}
		g.calls[key] = c
		go func() {
			defer func() {
				g.mu.Lock()
				delete(g.calls, key)
				g.mu.Unlock()
				close(c.done)
			}()
			c.val, c.err = fn()
		}()
	}
	c.waiters++
	g.mu.Unlock()

	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// waiting returns how many callers joined the call in flight for key, 0
// when there is none (for tests).
func (g *flight[T]) waiting(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.calls[key]; ok {
		return c.waiters
	}
	return 0
}
