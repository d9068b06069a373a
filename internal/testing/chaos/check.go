package chaos

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Overlap is two sections of one key that ran at once.
type Overlap struct {
	Key  string
	A, B Section // A began first
	// Protected: they overlapped before either client saw its lease lost,
	// so neither could have stopped in time: the lock itself failed, not
	// just a holder that ignored a loss.
	Protected bool
}

func (o Overlap) String() string {
	return fmt.Sprintf("key %s: %s (token %d, [%d, %d], lost at %d) and %s (token %d, [%d, %d], lost at %d) overlap by %v",
		o.Key, o.A.Client, o.A.Token, o.A.Start, o.A.End, o.A.LostAt, o.B.Client, o.B.Token, o.B.Start, o.B.End, o.B.LostAt,
		time.Duration(min(o.A.End, o.B.End)-o.B.Start))
}

// TokenRegression is a section whose token is not above the token of the
// section of its key that began before it.
type TokenRegression struct {
	Key        string
	Prev, Next Section
}

// Result is what Check finds in a history.
type Result struct {
	Sections    int
	Overlaps    []Overlap
	Protected   int // overlaps before any loss was seen
	Regressions []TokenRegression
	Lost        int // sections whose lease was lost
	// Linearizable is porcupine's verdict on the lock history: "ok",
	// "illegal" or "unknown" (timed out).
	Linearizable string
}

// OK reports whether the history shows no overlap and no token regression.
func (r Result) OK() bool { return len(r.Overlaps) == 0 && len(r.Regressions) == 0 }

func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d sections, %d lost, %d overlaps (%d before any loss was seen), %d token regressions, linearizable: %s",
		r.Sections, r.Lost, len(r.Overlaps), r.Protected, len(r.Regressions), r.Linearizable)
	for i, o := range r.Overlaps {
		if i == 5 {
			fmt.Fprintf(&b, "\n  ... and %d more", len(r.Overlaps)-5)
			break
		}
		b.WriteString("\n  overlap: " + o.String())
	}
	for i, g := range r.Regressions {
		if i == 5 {
			break
		}
		fmt.Fprintf(&b, "\n  token regression on %s: %s token %d then %s token %d", g.Key, g.Prev.Client, g.Prev.Token, g.Next.Client, g.Next.Token)
	}
	return b.String()
}

// LossModel says when a lock may be freed behind a holder's back, for the
// linearizability check.
type LossModel int

const (
	// LossReportedFirst: a lease is reported lost before the backend can
	// give the key to another (TTL backends, under their assumptions): the
	// key may be freed no earlier than the client saw the loss.
	LossReportedFirst LossModel = iota
	// LossAfterTheFact: the backend may free the key at any time during
	// the lease and the client learns later (session backends): the key
	// may be freed anywhere between the grant and the report.
	LossAfterTheFact
)

// Check examines sections of any number of keys and clients.
func Check(sections []Section, model LossModel, timeout time.Duration) Result {
	r := Result{Sections: len(sections)}
	byKey := map[string][]Section{}
	for _, s := range sections {
		byKey[s.Key] = append(byKey[s.Key], s)
		if s.LostAt != 0 {
			r.Lost++
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ss := byKey[k]
		slices.SortFunc(ss, func(a, b Section) int { return cmp.Compare(a.Start, b.Start) })
		// Sweep: every section that began before s and has not ended.
		var open []Section
		for _, s := range ss {
			keep := open[:0]
			for _, o := range open {
				if o.End > s.Start {
					keep = append(keep, o)
				}
			}
			open = keep
			for _, o := range open {
				ov := Overlap{Key: k, A: o, B: s, Protected: seenLost(o) > s.Start && seenLost(s) > s.Start}
				r.Overlaps = append(r.Overlaps, ov)
				if ov.Protected {
					r.Protected++
				}
			}
			open = append(open, s)
		}
		for i := 1; i < len(ss); i++ {
			if ss[i].Token != 0 && ss[i-1].Token != 0 && ss[i].Token <= ss[i-1].Token {
				r.Regressions = append(r.Regressions, TokenRegression{Key: k, Prev: ss[i-1], Next: ss[i]})
			}
		}
	}
	r.Linearizable = linearizable(sections, model, timeout)
	return r
}

// seenLost is when the client saw s lost, or never (max int64).
func seenLost(s Section) int64 {
	if s.LostAt == 0 {
		return 1<<63 - 1
	}
	return s.LostAt
}

// The porcupine model: one lock per key (the partition), whose state is the
// holding client ("" when free).
type lockOp struct {
	Kind   string // "acquire", "release", "lose"
	Client string
}

var lockModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			k := op.Metadata.(string)
			if _, ok := byKey[k]; !ok {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range order {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		holder, op, ok := state.(string), input.(lockOp), output.(bool)
		switch op.Kind {
		case "acquire": // Lock returned a lease
			return holder == "", op.Client
		case "release":
			if ok { // Unlock released the key
				return holder == op.Client, ""
			}
			return holder != op.Client, holder // Unlock found the lease gone
		case "lose": // the backend freed the key behind the holder's back
			return holder == op.Client, ""
		}
		return false, state
	},
	DescribeOperation: func(input, output any) string {
		op := input.(lockOp)
		return fmt.Sprintf("%s(%s) -> %v", op.Kind, op.Client, output)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("holder %q", state) },
}

// History converts sections to porcupine operations: each lease is an
// acquire from Lock's call to its return and a release from Unlock's call
// to its return, and a lost lease also a "lose" whose window follows model.
func History(sections []Section, model LossModel) []porcupine.Operation {
	ids := map[string]int{}
	var last int64
	for _, s := range sections {
		last = max(last, s.UnlockRet)
	}
	var ops []porcupine.Operation
	for _, s := range sections {
		id, ok := ids[s.Client]
		if !ok {
			id = len(ids)
			ids[s.Client] = id
		}
		ops = append(ops, porcupine.Operation{ClientId: id, Input: lockOp{"acquire", s.Client}, Output: true, Call: s.Call, Return: s.Start, Metadata: s.Key})
		switch {
		case s.Released:
			ops = append(ops, porcupine.Operation{ClientId: id, Input: lockOp{"release", s.Client}, Output: true, Call: s.UnlockCall, Return: s.UnlockRet, Metadata: s.Key})
		case s.LostAt == 0:
			// Unlock failed with the outcome unknown (a node unreachable):
			// the key is freed at some point after Unlock was called, at
			// once or when its TTL or session runs out.
			ops = append(ops, porcupine.Operation{ClientId: id, Input: lockOp{"lose", s.Client}, Output: true, Call: s.UnlockCall, Return: last + 1, Metadata: s.Key})
		default:
			// Lost: Unlock found the lease gone.
			ops = append(ops, porcupine.Operation{ClientId: id, Input: lockOp{"release", s.Client}, Output: false, Call: s.UnlockCall, Return: s.UnlockRet, Metadata: s.Key})
			from := s.Start // session backends: freed any time during the lease
			if model == LossReportedFirst {
				// TTL backends: no earlier than the holder saw the loss, or
				// than Unlock found it if nothing reported it before.
				from = min(s.LostAt, s.UnlockCall)
			}
			ops = append(ops, porcupine.Operation{ClientId: id, Input: lockOp{"lose", s.Client}, Output: true, Call: from, Return: last + 1, Metadata: s.Key})
		}
	}
	return ops
}

func linearizable(sections []Section, model LossModel, timeout time.Duration) string {
	if len(sections) == 0 {
		return "ok"
	}
	switch porcupine.CheckOperationsTimeout(lockModel, History(sections, model), timeout) {
	case porcupine.Ok:
		return "ok"
	case porcupine.Illegal:
		return "illegal"
	}
	return "unknown"
}
