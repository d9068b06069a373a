package conformance

import (
	"runtime"
	"sync/atomic"
	"time"
)

// section is a critical section the cases share among holders: a gauge of
// holders that must never pass 1, and a counter updated by read-yield-write
// that must lose no update.
type section struct {
	holders, maxHolders, counter atomic.Int64
}

func (s *section) run(hold time.Duration) {
	n := s.holders.Add(1)
	for {
		m := s.maxHolders.Load()
		if n <= m || s.maxHolders.CompareAndSwap(m, n) {
			break
		}
	}
	v := s.counter.Load()
	runtime.Gosched()
	time.Sleep(hold)
	s.counter.Store(v + 1)
	s.holders.Add(-1)
}

func (s *section) check(f *fixture, sections int64) {
	f.Helper()
	if m := s.maxHolders.Load(); m > 1 {
		f.Errorf("%d holders at once; want at most 1", m)
	}
	if got := s.counter.Load(); got != sections {
		f.Errorf("counter = %d after %d critical sections: updates were lost to overlap", got, sections)
	}
}
