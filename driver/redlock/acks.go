package redlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/pipeline"
)

// Replica acknowledgements (WithReplicaAcks). A Redis master acknowledges
// a write before its replicas have it; a failover then promotes a replica
// without it, and a lock granted there is granted again. WAIT n ms blocks
// the client until n replicas have every write its connection made, or
// for ms, and says how many did. It counts one connection's writes, and
// inside a script it does not wait (Redis 7; before, it is refused
// there), so it goes right after the write in the same
// batch, which a transport sends on one connection of its own
// (transport.go; backend.Transport for other modules).

// ErrNotReplicated matches the error of an acquire or renewal whose write
// fewer replicas than WithReplicaAcks asks acknowledged in time. Such an
// error matches driver.ErrUnavailable too, unless WAIT itself was refused
// (then it matches the refusal: driver.ErrDenied for an ACL's).
var ErrNotReplicated = errors.New("redlock: the replicas did not acknowledge the write")

// replicaAcks is what WithReplicaAcks set: WAIT replicas timeout after
// each acquire and renewal batch; replicas 0: no WAIT.
type replicaAcks struct {
	replicas int
	timeout  time.Duration
}

func (a replicaAcks) on() bool { return a.replicas > 0 }

// within returns a with its timeout capped at validity, the longest the
// grant or extension WAIT acknowledges could be of use: an acknowledgement
// later than that is refused as too late anyway (errTooSlow), so a longer
// WAIT would only hold the caller (replica_acks_timeout has no upper
// bound of its own).
func (a replicaAcks) within(validity time.Duration) replicaAcks {
	a.timeout = max(min(a.timeout, validity), time.Millisecond)
	return a
}

// cmd is the WAIT command.
func (a replicaAcks) cmd() pipeline.Cmd {
	return pipeline.Cmd{Name: "WAIT", Args: []any{a.replicas, max(a.timeout.Milliseconds(), 1)}}
}

// notReplicatedError says that a node's write was not acknowledged by
// enough replicas: got of want within timeout, or WAIT failed (err).
type notReplicatedError struct {
	node      string
	got, want int64
	timeout   time.Duration
	err       error // WAIT's own failure, classified by node.fail; nil: too few replicas
}

func (e *notReplicatedError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%v (after the write: %v)", e.err, ErrNotReplicated)
	}
	return fmt.Sprintf("redis %s: %d of %d replicas acknowledged the write within %v: %v: %v",
		e.node, e.got, e.want, e.timeout, ErrNotReplicated, driver.ErrUnavailable)
}

func (e *notReplicatedError) Unwrap() []error {
	if e.err != nil {
		return []error{ErrNotReplicated, e.err}
	}
	return []error{ErrNotReplicated, driver.ErrUnavailable}
}

// pipelineAcked runs calls on n in one round trip, as pipeline does, WAIT
// last on the same connection; calls the server answered NOSCRIPT go
// again as EVAL, with a WAIT of their own. It returns each call's result
// and, for each, nil when the replicas acknowledged what it wrote, else
// why not (a *notReplicatedError). Each batch is bounded by timeout plus
// WAIT's.
func (n *node) pipelineAcked(ctx context.Context, timeout time.Duration, calls []call, a replicaAcks) (out []result, unacked []error) {
	out = make([]result, len(calls))
	unacked = make([]error, len(calls))
	deadline, ok := deadlineFor(ctx, timeout+a.timeout)
	if !ok {
		err := n.fail(ctx, context.DeadlineExceeded)
		failAll(out, err)
		for i := range unacked {
			unacked[i] = err
		}
		return out, unacked
	}
	send := func(idx []int, cmd func(c call) pipeline.Cmd) {
		cmds := make([]pipeline.Cmd, len(idx)+1)
		for k, i := range idx {
			cmds[k] = cmd(calls[i])
		}
		cmds[len(idx)] = a.cmd()
		res := make([]result, len(cmds))
		n.t.doAll(ctx, deadline, cmds, res)
		acked := n.acked(ctx, a, res[len(idx)])
		for k, i := range idx {
			out[i], unacked[i] = res[k], acked
		}
	}
	all := make([]int, len(calls))
	for i := range all {
		all[i] = i
	}
	send(all, func(c call) pipeline.Cmd { return pipeline.Cmd{Name: c.name(), Args: c.args} })
	var again []int
	for i, c := range calls {
		if c.noScript(out[i].Err) {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		send(again, func(c call) pipeline.Cmd { return pipeline.Cmd{Name: "EVAL", Args: c.evalArgs()} })
	}
	n.classify(ctx, out)
	return out, unacked
}

// doAcked runs one call as pipelineAcked does.
func (n *node) doAcked(ctx context.Context, timeout time.Duration, c call, a replicaAcks) (reply any, err, unacked error) {
	out, un := n.pipelineAcked(ctx, timeout, []call{c}, a)
	return out[0].Reply, out[0].Err, un[0]
}

// acked reads WAIT's result r: nil when enough replicas acknowledged.
func (n *node) acked(ctx context.Context, a replicaAcks, r result) error {
	e := &notReplicatedError{node: n.name, want: int64(a.replicas), timeout: a.timeout}
	switch got, isInt := r.Reply.(int64); {
	case r.Err != nil:
		e.err = n.fail(ctx, r.Err)
	case !isInt:
		e.err = fmt.Errorf("redis %s: unexpected reply %T to WAIT", n.name, r.Reply)
	case got >= e.want:
		return nil
	default:
		e.got = got
	}
	return e
}

// everywhereAcked is everywhere with WAIT a after each node's batch: a
// call a node answered 1 (extended) counts as that node's error unless its
// replicas acknowledged it.
func (l *locker) everywhereAcked(ctx context.Context, timeout time.Duration, calls []call, a replicaAcks) []tally {
	perNode := make([][]result, len(l.nodes))
	var wg sync.WaitGroup
	for j, n := range l.nodes {
		wg.Go(func() {
			out, unacked := n.pipelineAcked(ctx, timeout, calls, a)
			for i := range out {
				if out[i].Err == nil && out[i].Reply == int64(1) && unacked[i] != nil {
					out[i] = result{Err: unacked[i]}
				}
			}
			perNode[j] = out
		})
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
