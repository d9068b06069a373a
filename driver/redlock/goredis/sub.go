package goredis

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexkit/mutexkit/driver/redlock/internal/backend"
)

// sub is a node's subscription: a go-redis PubSub, on a connection of its
// own that the client dials outside its pool.
type sub struct{ ps *redis.PubSub }

// dial returns c's subscription dial: the PubSub's connection is made at
// once (by a PING, whose pong the watcher ignores), bounded by ctx and the
// client's DialTimeout.
func dial(c redis.UniversalClient) func(context.Context) (backend.Sub, error) {
	return func(ctx context.Context) (backend.Sub, error) {
		ps := c.Subscribe(ctx)
		if err := ps.Ping(ctx); err != nil {
			ps.Close()
			_, err = reply(nil, err)
			return nil, err
		}
		return sub{ps}, nil
	}
}

// Writes are bounded by the client's WriteTimeout.
func (s sub) Subscribe(channel string) error { return s.ps.Subscribe(context.Background(), channel) }

func (s sub) Ping() error { return s.ps.Ping(context.Background()) }

// Receive waits up to timeout; a timeout is an error, which ends the
// connection (the watcher pings it well within the timeout).
func (s sub) Receive(timeout time.Duration) (backend.Event, error) {
	msg, err := s.ps.ReceiveTimeout(context.Background(), timeout)
	if err != nil {
		_, err = reply(nil, err)
		return backend.Event{}, err
	}
	switch m := msg.(type) {
	case *redis.Message:
		return backend.Event{Kind: backend.Message, Data: []byte(m.Payload)}, nil
	case *redis.Subscription:
		switch m.Kind {
		case "subscribe", "ssubscribe":
			return backend.Event{Kind: backend.Subscribed}, nil
		case "sunsubscribe": // unasked: the channel's slot moved
			return backend.Event{Kind: backend.Unsubscribed}, nil
		}
	}
	return backend.Event{}, nil
}

func (s sub) Close() error { return s.ps.Close() }
