package redlock

import (
	"strings"
	"testing"
)

// TestScriptsReplicateEffects: a script that reads the server's clock
// and then writes switches to effects replication before its first write,
// else Redis 3.2 to 4.x refuse its writes ("Write commands not allowed
// after non deterministic commands"; the switch itself, once a write was
// made, is refused). The servers the tests start are newer, where the
// switch is the default, so the scripts' text is checked.
func TestScriptsReplicateEffects(t *testing.T) {
	for name, s := range map[string]*script{
		"acquire": acquireScript, "fencedAcquire": fencedAcquireScript, "wait": waitScript,
		"release": releaseScript, "withdraw": withdrawScript, "extend": extendScript, "inspect": inspectScript,
	} {
		clock := strings.Index(s.src, "'TIME'")
		if clock < 0 {
			continue
		}
		first := len(s.src)
		for _, w := range []string{"SET", "DEL", "INCR", "ZADD", "ZREM", "ZREMRANGEBYSCORE", "PEXPIRE"} {
			if i := strings.Index(s.src, "redis.call('"+w+"'"); i >= 0 {
				first = min(first, i)
			}
		}
		if sw := strings.Index(s.src, "redis.replicate_commands()"); sw < 0 || sw > first {
			t.Errorf("%s script reads TIME but does not call redis.replicate_commands() before its first write", name)
		}
	}
}
