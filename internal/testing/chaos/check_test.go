package chaos

import (
	"testing"
	"time"
)

// sec builds a section held from start to end, Lock called 1 before and
// Unlock returning 1 after.
func sec(client, key string, token uint64, start, end, lostAt int64) Section {
	return Section{Client: client, Key: key, Token: token, Call: start - 1, Start: start, End: end,
		UnlockCall: end, UnlockRet: end + 1, Released: lostAt == 0, LostAt: lostAt}
}

func TestCheckSequential(t *testing.T) {
	h := []Section{
		sec("a", "k", 1, 10, 20, 0),
		sec("b", "k", 2, 30, 40, 0),
		sec("a", "j", 1, 15, 35, 0), // another key may overlap
		sec("c", "k", 3, 50, 60, 0),
	}
	for _, m := range []LossModel{LossReportedFirst, LossAfterTheFact} {
		r := Check(h, m, 10*time.Second)
		if !r.OK() || r.Linearizable != "ok" {
			t.Errorf("model %d: a sequential history fails: %s", m, r)
		}
	}
}

// A silent overlap (both released cleanly) is found by the sweep and is
// not linearizable under either loss model.
func TestCheckSilentOverlap(t *testing.T) {
	h := []Section{sec("a", "k", 1, 10, 30, 0), sec("b", "k", 2, 20, 40, 0)}
	for _, m := range []LossModel{LossReportedFirst, LossAfterTheFact} {
		r := Check(h, m, 10*time.Second)
		if len(r.Overlaps) != 1 || r.Protected != 1 || r.Linearizable != "illegal" {
			t.Errorf("model %d: %s; want 1 protected overlap, illegal", m, r)
		}
	}
}

// A holder that lost its lease while another took the key: with loss
// reported first (TTL backends), the key was taken before the loss was
// seen, which is illegal; a session backend may free the key before the
// holder learns of it, which is legal (and fencing must cover it).
func TestCheckLossModels(t *testing.T) {
	h := []Section{sec("a", "k", 1, 10, 50, 45), sec("b", "k", 2, 20, 40, 0)}
	if r := Check(h, LossReportedFirst, 10*time.Second); r.Linearizable != "illegal" || r.Protected != 1 {
		t.Errorf("loss reported first: %s; want illegal, 1 protected overlap", r)
	}
	if r := Check(h, LossAfterTheFact, 10*time.Second); r.Linearizable != "ok" || len(r.Overlaps) != 1 {
		t.Errorf("loss after the fact: %s; want linearizable with 1 overlap", r)
	}
	// The holder saw the loss first and went on regardless: an overlap,
	// but not a protected one, and linearizable under both models.
	h = []Section{sec("a", "k", 1, 10, 50, 15), sec("b", "k", 2, 20, 40, 0)}
	if r := Check(h, LossReportedFirst, 10*time.Second); r.Linearizable != "ok" || r.Protected != 0 || len(r.Overlaps) != 1 {
		t.Errorf("loss seen before the takeover: %s", r)
	}
}

func TestCheckTokens(t *testing.T) {
	h := []Section{sec("a", "k", 5, 10, 20, 0), sec("b", "k", 5, 30, 40, 0), sec("c", "k", 3, 50, 60, 0)}
	if r := Check(h, LossReportedFirst, 10*time.Second); len(r.Regressions) != 2 || r.OK() {
		t.Errorf("%s; want 2 token regressions", r)
	}
}

func TestNowSharedAcrossProcesses(t *testing.T) {
	a := Now()
	time.Sleep(time.Millisecond)
	if b := Now(); b-a < int64(time.Millisecond) {
		t.Fatalf("CLOCK_MONOTONIC went from %d to %d over 1ms", a, b)
	}
}

// An Unlock that failed with its outcome unknown (a node out of reach)
// leaves the key to be freed later, at once or at its TTL: a later holder
// is legal under both models, and so is an Unlock that found the lease
// lost with nothing reported before.
func TestCheckUnknownUnlock(t *testing.T) {
	failed := sec("a", "k", 1, 10, 20, 0)
	failed.Released = false
	lostAtUnlock := sec("b", "k", 2, 30, 40, 0)
	lostAtUnlock.Released, lostAtUnlock.LostAt = false, lostAtUnlock.UnlockRet
	h := []Section{failed, lostAtUnlock, sec("c", "k", 3, 50, 60, 0)}
	for _, m := range []LossModel{LossReportedFirst, LossAfterTheFact} {
		if r := Check(h, m, 10*time.Second); !r.OK() || r.Linearizable != "ok" {
			t.Errorf("model %d: %s; want ok", m, r)
		}
	}
}

func TestPassedOver(t *testing.T) {
	waited := func(client string, call, start int64) Section {
		return Section{Client: client, Key: "k", Call: call, Start: start, End: start + 1}
	}
	// Two clients in turn: each waits out the other's one grant.
	fair := []Section{waited("a", 0, 1), waited("b", 0, 3), waited("a", 2, 5), waited("b", 4, 7)}
	if got := passedOver(fair, 2); got != 0 {
		t.Errorf("taking turns: passed over %d, want 0", got)
	}
	// b waits while a takes the key three times.
	unfair := []Section{waited("b", 0, 10), waited("a", 1, 2), waited("a", 3, 4), waited("a", 5, 6)}
	if got := passedOver(unfair, 2); got != 2 {
		t.Errorf("b passed over by three of a's grants: %d, want 2 (one is allowed)", got)
	}
}
