package redlock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Redlock calls return as soon as their outcome is known: an acquire once
// a quorum granted, a release once a quorum released or so many nodes no
// longer had the key that it was not held. The slowest nodes, a minority,
// then no longer set the latency of every call, and a paused node no
// longer holds each call for its timeout. Their answers are still awaited,
// in the background, and a release asks a node only once that node
// answered the acquire, so that the two do not cross; if the acquire's
// answer was a timeout, its SET may still run after the release, leaving
// a key on that minority node until its TTL. A failed attempt alone waits
// for every answer and releases before it returns: the next attempt
// keeps the owner, so a release of this one's late grant could otherwise
// delete the next one's.

// gathered is a fan-out over every node, cut short once decided.
type gathered[T any] struct {
	out      []T
	answered []bool // which of out are in; the rest are late
	late     int    // how many are late
	ch       chan nodeAnswer[T]
}

type nodeAnswer[T any] struct {
	i int
	v T
}

// gather runs fn on every node at once and collects the answers until
// decided, called with each, says the outcome is known, or all are in, or
// done is closed (then some are late however few answered). The caller
// must then call finish, which awaits the late answers.
func gather[T any](l *locker, done <-chan struct{}, fn func(i int, n *node) T, decided func(i int, v T) bool) *gathered[T] {
	g := &gathered[T]{
		out:      make([]T, len(l.nodes)),
		answered: make([]bool, len(l.nodes)),
		ch:       make(chan nodeAnswer[T], len(l.nodes)), // never blocks a late sender
	}
	for i, n := range l.nodes {
		go func() { g.ch <- nodeAnswer[T]{i, fn(i, n)} }()
	}
	select {
	case <-done: // over before it began: every answer is late
		g.late = len(l.nodes)
		return g
	default:
	}
	for got := 0; got < len(l.nodes); {
		select {
		case a := <-g.ch:
			got++
			g.out[a.i], g.answered[a.i] = a.v, true
			if decided(a.i, a.v) {
				g.late = len(l.nodes) - got
				return g
			}
		case <-done:
			g.late = len(l.nodes) - got
			return g
		}
	}
	return g
}

// fanout runs fn on every node at once and waits for every answer, each
// bounded by its node timeout.
func fanout[T any](l *locker, fn func(n *node) T) []T {
	never := func(int, T) bool { return false }
	return gather(l, nil, func(_ int, n *node) T { return fn(n) }, never).out
}

// wait collects the late answers here.
func (g *gathered[T]) wait() {
	for ; g.late > 0; g.late-- {
		a := <-g.ch
		g.out[a.i], g.answered[a.i] = a.v, true
	}
}

// finish awaits the late answers in the background, passing each to late
// (if not nil), and returns a channel closed once they are all handled;
// nil when none was late.
func (g *gathered[T]) finish(l *locker, late func(i int, v T)) chan struct{} {
	if g.late == 0 {
		return nil
	}
	settled := make(chan struct{})
	l.background(func() {
		defer close(settled)
		for range g.late {
			a := <-g.ch
			if late != nil {
				late(a.i, a.v)
			}
		}
	})
	return settled
}

// background runs fn on a goroutine that Close waits for; once Close has
// begun, it runs fn in the caller instead.
func (l *locker) background(fn func()) {
	l.mu.Lock()
	if l.held == nil { // closing
		l.mu.Unlock()
		fn()
		return
	}
	l.bg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.bg.Done()
		fn()
	}()
}

// tally is one call's replies over the nodes, for the release and extend
// scripts: done where the script acted (1), notHeld where the owner no
// longer held the key (0), and the nodes' errors.
type tally struct {
	done, notHeld int
	errs          []error
}

func (t *tally) add(n *node, r result) {
	switch {
	case r.Err != nil:
		t.errs = append(t.errs, r.Err)
	case r.Reply == int64(1):
		t.done++
	case r.Reply == int64(0):
		t.notHeld++
	default:
		t.errs = append(t.errs, fmt.Errorf("redis %s: unexpected reply %v", n.name, r.Reply))
	}
}

// everywhere runs calls on every node at once, pipelined (one round trip
// per node), waits for every node, each bounded by timeout, and tallies
// each call's replies over the nodes.
func (l *locker) everywhere(ctx context.Context, timeout time.Duration, calls []call) []tally {
	perNode := make([][]result, len(l.nodes))
	var wg sync.WaitGroup
	for i, n := range l.nodes {
		wg.Go(func() { perNode[i] = n.pipeline(ctx, timeout, calls) })
	}
	wg.Wait()
	tallies := make([]tally, len(calls))
	for i := range tallies {
		for j, n := range l.nodes {
			tallies[i].add(n, perNode[j][i])
		}
	}
	return tallies
}
