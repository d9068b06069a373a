package chaos

import (
	"slices"
	"time"
)

// Waiting figures of a history: how long Lock calls waited, and how far
// arrival order was kept.

// lockWaits returns the median and longest wait of the sections' Lock
// calls (Call to Start).
func lockWaits(all []Section) (median, longest time.Duration) {
	ws := make([]time.Duration, 0, len(all))
	for _, s := range all {
		ws = append(ws, time.Duration(s.Start-s.Call))
	}
	return medianMax(ws)
}

// passedOver returns the longest wait in handoffs passed over: for each
// section, the grants of its key to others that began between its Lock
// call and its start, less the clients-1 that arrival order allows (each
// other client may be ahead of it once); the most over all sections, 0 if
// none exceeds the allowance. With the wait queue it stays near 0 (a Lock
// that races another's arrival can show 1 or 2); with every waiter woken
// and racing, it runs into the hundreds.
func passedOver(all []Section, clients int) int {
	starts := map[string][]int64{}
	for _, s := range all {
		starts[s.Key] = append(starts[s.Key], s.Start)
	}
	for _, ss := range starts {
		slices.Sort(ss)
	}
	most := 0
	for _, s := range all {
		ss := starts[s.Key]
		lo, _ := slices.BinarySearch(ss, s.Call+1) // first start after the call
		hi, _ := slices.BinarySearch(ss, s.Start)  // its own start
		most = max(most, hi-lo-(clients-1))
	}
	return most
}
