package testserver

import (
	"slices"
	"strconv"
	"strings"

	"github.com/gomodule/redigo/redis"
)

// nodeLine is one line of CLUSTER NODES: one node as the asked node sees it.
type nodeLine struct {
	id     string
	flags  string // myself,master / slave / master,fail / ...
	master string // the id of the master it replicates, "-" for a master
	link   string // connected or disconnected
	slots  []string
}

// clusterNodes returns the cluster as the node at addr sees it.
func clusterNodes(addr string) ([]nodeLine, error) {
	text, err := redis.String(redisDo(addr, "CLUSTER", "NODES"))
	if err != nil {
		return nil, err
	}
	var lines []nodeLine
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		lines = append(lines, nodeLine{id: f[0], flags: f[2], master: f[3], link: f[7], slots: f[8:]})
	}
	return lines, nil
}

func (l nodeLine) is(flag string) bool { return slices.Contains(strings.Split(l.flags, ","), flag) }

// ownSlots returns the slot ranges ("0-5460", "7") the node owns, leaving
// out the migrations the node itself shows ("[93->-id]").
func (l nodeLine) ownSlots() []string {
	var own []string
	for _, s := range l.slots {
		if !strings.HasPrefix(s, "[") {
			own = append(own, s)
		}
	}
	return own
}

func (l nodeLine) owns(slot int) bool {
	for _, r := range l.ownSlots() {
		lo, hi, isRange := strings.Cut(r, "-")
		if !isRange {
			hi = lo
		}
		a, errA := strconv.Atoi(lo)
		b, errB := strconv.Atoi(hi)
		if errA == nil && errB == nil && a <= slot && slot <= b {
			return true
		}
	}
	return false
}

// ownership sums up a view's slot owners, so that two views can be
// compared: "id slots...", one per master owning slots, sorted.
func ownership(lines []nodeLine) string {
	var owners []string
	for _, l := range lines {
		if own := l.ownSlots(); l.is("master") && len(own) > 0 {
			owners = append(owners, l.id+" "+strings.Join(own, " "))
		}
	}
	slices.Sort(owners)
	return strings.Join(owners, "; ")
}
