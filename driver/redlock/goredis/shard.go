package goredis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	redigo "github.com/gomodule/redigo/redis"
	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver/redlock/internal/backend"
)

// shardSub is a subscription to one sharded channel of a Redis Cluster: a
// go-redis PubSub on a connection to the master serving the channel's
// slot.
type shardSub struct {
	sub
	cc        *redis.ClusterClient
	confirmed bool // the dial read the confirmation; the first Receive returns it
}

// dialShard returns cc's sharded dial (backend.Node.DialShard): SSUBSCRIBE
// channel, on a connection go-redis dials to the master it knows for the
// channel's slot, and its confirmation awaited within ctx. A master that
// no longer serves the slot answers -MOVED, and a dead one none: the
// client then reloads its slot map, for the next dial (go-redis itself
// would only every minute, dialling the dead master until then).
func dialShard(cc *redis.ClusterClient) func(context.Context, string) (backend.Sub, error) {
	return func(ctx context.Context, channel string) (backend.Sub, error) {
		ps := cc.SSubscribe(ctx, channel)
		timeout := time.Second
		if dl, ok := ctx.Deadline(); ok {
			timeout = max(time.Until(dl), time.Millisecond)
		}
		msg, err := ps.ReceiveTimeout(ctx, timeout)
		if err == nil {
			if m, ok := msg.(*redis.Subscription); !ok || m.Kind != "ssubscribe" {
				err = fmt.Errorf("goredis: SSUBSCRIBE answered with %T", msg)
			}
		}
		if err != nil {
			ps.Close()
			if stale(err) {
				cc.ReloadState(ctx)
			}
			_, err = reply(nil, err)
			return nil, err
		}
		return &shardSub{sub: sub{ps}, cc: cc, confirmed: true}, nil
	}
}

func (s *shardSub) Subscribe(channel string) error {
	return s.ps.SSubscribe(context.Background(), channel)
}

// Receive returns the dial's confirmation first. When the server ends the
// subscription (the slot moved), answers -MOVED or cannot be reached, the
// client reloads its slot map, so that the watcher's next dial reaches the
// new master.
func (s *shardSub) Receive(timeout time.Duration) (backend.Event, error) {
	if s.confirmed {
		s.confirmed = false
		return backend.Event{Kind: backend.Subscribed}, nil
	}
	ev, err := s.sub.Receive(timeout)
	if ev.Kind == backend.Unsubscribed || stale(err) {
		s.cc.ReloadState(context.Background())
	}
	return ev, err
}

// stale reports whether err says the slot map may be out of date: a
// redirection, or no answer at all (the master died; its replica may have
// taken over). LazyReload, under ReloadState, reloads at most every 200 ms.
func stale(err error) bool {
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, redis.ErrClosed) {
		return false // closed here: the watcher ended the subscription
	}
	var re redis.Error   // go-redis's, from the dial
	var rre redigo.Error // reply's, from Receive
	return moved(err) || !errors.As(err, &re) && !errors.As(err, &rre)
}

// moved reports whether err is a -MOVED or -ASK redirection (go-redis's
// or, once converted by reply, redigo's).
func moved(err error) bool {
	return err != nil && (strings.HasPrefix(err.Error(), "MOVED ") || strings.HasPrefix(err.Error(), "ASK "))
}
