package mutex

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// renewer keeps a client's expiring leases alive. One goroutine per client
// (started with the first such lease, stopped by Close) sleeps until the
// earliest event among all leases (a renewal due, a validity running out, a
// minimum hold ending), takes every lease due around then, and renews them
// in one driver call run beside the loop, so that a slow backend never
// delays the loss of another lease. 10,000 leases cost one heap, not 10,000
// timers.
type renewer struct {
	c *Client

	mu      sync.Mutex
	leases  leaseHeap
	started bool
	stopped bool
	kick    chan struct{}
	armedAt time.Time       // when the loop's timer fires; zero: not armed
	ctx     context.Context // cancelled by stop: ends renewals in flight
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// schedule is a lease's place in its client's renewer. Guarded by
// renewer.mu.
type schedule struct {
	pos       int       // index in the heap + 1; 0: not scheduled
	next      time.Time // the earliest of the three below that is set
	renewAt   time.Time // zero: the lease does not expire
	lossAt    time.Time // its validity runs out: lost unless renewed by then
	releaseAt time.Time // WithMinHold: release then
	inflight  bool      // a renewal is under way
}

func (s *schedule) update() {
	s.next = earliest(s.lossAt, s.releaseAt)
	if !s.inflight {
		s.next = earliest(s.next, s.renewAt)
	}
}

// earliest returns the earlier of a and b, ignoring zero times.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func (r *renewer) init(c *Client) {
	r.c = c
	r.kick = make(chan struct{}, 1)
	r.ctx, r.cancel = context.WithCancel(context.Background())
}

// add schedules a newly acquired lease: the renewal of an expiring grant
// every third of its validity, or the verification of a session grant every
// heartbeat.
func (r *renewer) add(l *Lease) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return // Close ends the lease
	}
	start := l.acquired // an expiring grant's validity counts from before the attempt
	if l.validity == 0 {
		start = time.Now() // a session grant was verified by being granted, however long that took
	}
	r.schedule(l, start, l.validity)
	r.push(l)
}

// schedule sets a lease's next renewal and loss after a grant or renewal
// sent at start that holds for v (0: a session grant, verified then).
// Callers hold mu.
func (r *renewer) schedule(l *Lease, start time.Time, v time.Duration) {
	if l.validity == 0 {
		hb := r.c.heartbeat
		l.sched.renewAt = start.Add(hb)
		l.sched.lossAt = start.Add(sessionUnverified(hb))
		return
	}
	l.sched.renewAt = start.Add(v / 3)
	l.sched.lossAt = start.Add(v - lossMargin(v))
}

// sessionUnverified is how long after its last successful verification a
// session lease counts as lost: two checks may fail, or time out, first.
func sessionUnverified(heartbeat time.Duration) time.Duration {
	return 2*heartbeat + heartbeat/2
}

// interval is how often a lease is renewed or verified.
func (l *Lease) interval(heartbeat time.Duration) time.Duration {
	if l.validity == 0 {
		return heartbeat
	}
	return l.validity / 3
}

// releaseAt schedules the release of an unlocked lease held on for
// WithMinHold.
func (r *renewer) releaseAt(l *Lease, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return // Close releases it
	}
	l.sched.releaseAt = t
	if l.sched.pos == 0 {
		r.push(l)
		return
	}
	l.sched.update()
	heap.Fix(&r.leases, l.sched.pos-1)
	if r.armedAt.IsZero() || l.sched.next.Before(r.armedAt) {
		r.wakeLoop()
	}
}

// push schedules l and starts the loop if need be. Callers hold mu.
func (r *renewer) push(l *Lease) {
	l.sched.update()
	heap.Push(&r.leases, l)
	if !r.started {
		r.started = true
		r.wg.Add(1)
		go r.loop()
	}
	if l.sched.pos == 1 && (r.armedAt.IsZero() || l.sched.next.Before(r.armedAt)) {
		r.wakeLoop() // only when the loop would sleep past this lease's event
	}
}

func (r *renewer) wakeLoop() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *renewer) remove(l *Lease) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.sched.pos != 0 {
		heap.Remove(&r.leases, l.sched.pos-1)
	}
}

// stop ends the loop and renewals in flight, and waits for them.
func (r *renewer) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

func (r *renewer) loop() {
	defer r.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.mu.Lock()
		if r.leases.Len() > 0 {
			r.armedAt = r.leases[0].sched.next
			timer.Reset(time.Until(r.armedAt))
		} else {
			r.armedAt = time.Time{}
			timer.Stop()
		}
		r.mu.Unlock()
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
			continue
		case <-timer.C:
		}
		r.runDue(time.Now())
	}
}

// runDue handles every lease whose next event has come: releases, losses,
// and one batch of renewals that takes in leases due a little later too.
func (r *renewer) runDue(now time.Time) {
	var lost, release, batch []*Lease
	r.mu.Lock()
	for r.leases.Len() > 0 {
		l := r.leases[0]
		s := &l.sched
		slack := time.Duration(0)
		if s.next.Equal(s.renewAt) {
			// Take every lease due within the next interval: renewing early
			// is harmless, and leases then renew together, one batch (one
			// pipelined round trip per node) per interval.
			slack = l.interval(r.c.heartbeat)
		}
		if s.next.After(now.Add(slack)) {
			break
		}
		heap.Pop(&r.leases)
		switch {
		case !s.releaseAt.IsZero() && !now.Before(s.releaseAt):
			release = append(release, l)
		case !s.lossAt.IsZero() && !now.Before(s.lossAt):
			lost = append(lost, l)
		case s.renewAt.IsZero(): // not due for anything: cannot happen, but stay scheduled
			r.push(l)
		default:
			s.inflight = true
			batch = append(batch, l)
		}
	}
	for _, l := range batch { // still watched for loss while in flight
		l.sched.update()
		heap.Push(&r.leases, l)
	}
	if len(release)+len(batch) > 0 {
		r.wg.Add(1)
	}
	r.mu.Unlock()

	for _, l := range lost {
		if l.validity == 0 {
			l.lose(errUnverified)
		} else {
			l.lose(errExpired)
		}
	}
	if len(release)+len(batch) > 0 {
		go func() {
			defer r.wg.Done()
			r.release(release)
			r.renewBatch(batch)
		}()
	}
}

// release ends leases whose minimum hold has passed.
func (r *renewer) release(leases []*Lease) {
	for _, l := range leases {
		ctx, cancel := r.releaseCtx(l)
		r.c.lockerNow().Release(ctx, l.key, l.owner) // not held: it went already
		cancel()
		l.mu.Lock()
		if l.state == stateReleasing {
			l.state = stateEnded
		}
		l.mu.Unlock()
		r.c.forget(l)
	}
}

// releaseCtx bounds a release the renewer makes, which stop ends. With
// observers it carries the Lock's observed context, so that the release
// joins the Lock's trace.
func (r *renewer) releaseCtx(l *Lease) (context.Context, context.CancelFunc) {
	if l.obs == nil {
		return context.WithTimeout(r.ctx, closeReleaseTimeout)
	}
	ctx, cancel := context.WithTimeout(l.obs, closeReleaseTimeout)
	stop := context.AfterFunc(r.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// renewBatch renews leases in one driver call, bounded by the earliest
// validity among them, and schedules what follows for each.
func (r *renewer) renewBatch(batch []*Lease) {
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	reqs := make([]driver.Renewal, len(batch))
	remaining := make([]time.Duration, len(batch))
	deadline := batch[0].sched.lossAt
	r.mu.Lock()
	for i, l := range batch {
		reqs[i] = driver.Renewal{Key: l.key, Owner: l.owner, TTL: l.ttl}
		if l.validity == 0 {
			reqs[i].TTL = 0 // verify a session grant
		}
		remaining[i] = l.sched.lossAt.Sub(start) + lossMargin(l.validity)
		if l.sched.lossAt.Before(deadline) {
			deadline = l.sched.lossAt
		}
	}
	r.mu.Unlock()

	ctx, cancel := context.WithDeadline(r.ctx, deadline)
	r.c.lockerNow().Renew(ctx, reqs)
	cancel()

	now := time.Now()
	took := now.Sub(start)
	var lost []int
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	for i, l := range batch {
		s := &l.sched
		s.inflight = false
		if s.pos == 0 {
			continue // lost or released meanwhile
		}
		err := reqs[i].Err
		if err == nil && l.validity > 0 && reqs[i].Validity <= 0 {
			err = errors.New("driver renewed with no validity")
		}
		switch {
		case err == nil && l.validity == 0: // a session grant, verified
			r.schedule(l, start, 0)
		case err == nil:
			r.schedule(l, start, reqs[i].Validity)
			l.mu.Lock()
			l.lostAt = s.lossAt.Sub(l.acquired)
			l.mu.Unlock()
		case errors.Is(err, ErrNotHeld):
			lost = append(lost, i)
			heap.Remove(&r.leases, s.pos-1)
			continue
		default: // unknown outcome: try again soon, until the validity runs out
			s.renewAt = now.Add(max(l.interval(r.c.heartbeat)/3, time.Millisecond))
		}
		s.update()
		heap.Fix(&r.leases, s.pos-1)
	}
	r.wakeLoop()
	r.mu.Unlock()

	for i, l := range batch {
		r.c.observeRenewed(l, remaining[i], took, reqs[i].Err)
	}
	for _, i := range lost {
		batch[i].lose(reqs[i].Err)
	}
}

// leaseHeap orders leases by their next event.
type leaseHeap []*Lease

func (h leaseHeap) Len() int           { return len(h) }
func (h leaseHeap) Less(i, j int) bool { return h[i].sched.next.Before(h[j].sched.next) }
func (h leaseHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].sched.pos = i + 1
	h[j].sched.pos = j + 1
}

func (h *leaseHeap) Push(x any) {
	l := x.(*Lease)
	*h = append(*h, l)
	l.sched.pos = len(*h)
}

func (h *leaseHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.sched.pos = 0
	return l
}
