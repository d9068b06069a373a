package redlock

import (
	"context"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/mutexkit/mutexkit/driver/redlock/internal/backend"
)

// redigoSub is a subscription connection of redigo's: the watcher
// (watch.go) sees every node's through backend.Sub.
type redigoSub struct {
	conn    redis.Conn
	psc     redis.PubSubConn
	bounded bool // redigo can bound a read; an application's dial function may give a conn that cannot
}

// subDial turns a redigo dial function into a node's subscription dial
// (nil: none).
func subDial(dial func(context.Context) (redis.Conn, error)) func(context.Context) (backend.Sub, error) {
	if dial == nil {
		return nil
	}
	return func(ctx context.Context) (backend.Sub, error) {
		conn, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		_, bounded := conn.(redis.ConnWithTimeout)
		return &redigoSub{conn: conn, psc: redis.PubSubConn{Conn: conn}, bounded: bounded}, nil
	}
}

func (s *redigoSub) Subscribe(channel string) error { return s.psc.Subscribe(channel) }

func (s *redigoSub) Ping() error {
	if err := s.conn.Send("PING"); err != nil {
		return err
	}
	return s.conn.Flush()
}

func (s *redigoSub) Receive(timeout time.Duration) (backend.Event, error) {
	var msg any
	if s.bounded {
		msg = s.psc.ReceiveWithTimeout(timeout)
	} else {
		msg = s.psc.Receive() // an application's dial function: its own read timeout, if any
	}
	switch m := msg.(type) {
	case redis.Message:
		return backend.Event{Kind: backend.Message, Data: m.Data}, nil
	case redis.Subscription:
		if m.Kind == "subscribe" {
			return backend.Event{Kind: backend.Subscribed}, nil
		}
	case error:
		return backend.Event{}, m
	}
	return backend.Event{}, nil
}

func (s *redigoSub) Close() error { return s.conn.Close() }
