//go:build sketch

package bench

// A sketch, not a driver: a wait queue on one Redis node kept in a list,
// with no script on the way of a handoff, measured in BenchmarkHandoff's
// setup (go test -tags sketch -bench 'ListSketch|Handoff/backend=redis1/'
// -benchtime 2000x). It answers one question, what a handoff costs the
// server by INFO commandstats when no script runs, for issue 14's target
// of 5 (the driver's queue: about 21). It has only the steady state: no
// dead head passed over, no renewal, no fencing, no lost wake-up but by a
// poll a second.
//
// The key is a list of waiters' members in arrival order, its head the
// holder; each member has a lease key of its own (SET PX), written before
// the member is pushed. Lock: SET the lease, RPUSH the member (one round
// trip); first in the list, it holds the key; else it waits for its
// wake-up, which says it is now first. Unlock: LREM its member (only its
// own: a release can remove no one else), LINDEX the new head, PUBLISH to
// the head's client. A handoff is LREM, LINDEX, PUBLISH and the releaser's
// SET and RPUSH: 5, whatever the number of waiters, and the woken waiter
// asks nothing.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

func BenchmarkListSketch(b *testing.B) {
	for _, n := range waitersAxis(128) {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			addr := redisAddrs(b, 1)[0]
			key := "ls:{" + keyFor(b) + "}"
			locks := make([]lockFunc, n)
			for i := range locks {
				locks[i] = sketchClient(b, addr, key, fmt.Sprintf("c%03d", i))
			}
			runHandoff(b, redisMeter(b, 1), locks, askAgain)
		})
	}
}

func sketchClient(b *testing.B, addr, key, cid string) lockFunc {
	conn, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(5*time.Second), redis.DialReadTimeout(5*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	sc, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(5*time.Second)) // waits for messages: no read deadline
	if err != nil {
		b.Fatal(err)
	}
	psc := redis.PubSubConn{Conn: sc}
	if err := psc.Subscribe("ls:wake:" + cid); err != nil {
		b.Fatal(err)
	}
	if _, ok := psc.Receive().(redis.Subscription); !ok {
		b.Fatal("subscribe")
	}
	wakes := make(chan string, 16)
	go func() {
		for {
			switch v := psc.Receive().(type) {
			case redis.Message:
				wakes <- string(v.Data)
			case error:
				return
			}
		}
	}()
	b.Cleanup(func() { conn.Close(); sc.Close() })
	var seq int
	return func(ctx context.Context) (func(context.Context) error, error) {
		seq++ // one goroutine per client
		m := fmt.Sprintf("%s-%d", cid, seq)
		conn.Send("SET", key+":l:"+m, 1, "PX", 3000)
		conn.Send("RPUSH", key, m)
		conn.Flush()
		if _, err := conn.Receive(); err != nil {
			return nil, err
		}
		pos, err := redis.Int(conn.Receive())
		if err != nil {
			return nil, err
		}
		if pos != 1 {
			poll := time.NewTicker(time.Second)
			defer poll.Stop()
		wait:
			for {
				select {
				case w := <-wakes:
					if w == m {
						break wait
					}
				case <-poll.C:
					if h, _ := redis.String(conn.Do("LINDEX", key, 0)); h == m {
						break wait
					}
				case <-ctx.Done():
					conn.Do("LREM", key, 1, m)
					return nil, ctx.Err()
				}
			}
		}
		return func(context.Context) error {
			conn.Send("LREM", key, 1, m)
			conn.Send("LINDEX", key, 0)
			conn.Flush()
			removed, err := redis.Int(conn.Receive())
			if err != nil {
				return err
			}
			head, err := redis.String(conn.Receive())
			if removed != 1 {
				return fmt.Errorf("not held")
			}
			if err == nil {
				_, err = conn.Do("PUBLISH", "ls:wake:"+head[:strings.IndexByte(head, '-')], head)
				return err
			}
			if err == redis.ErrNil {
				return nil
			}
			return err
		}, nil
	}
}
