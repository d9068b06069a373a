// Package backend is the door through which a module under driver/redlock
// (driver/redlock/goredis) supplies a node's transport and subscription
// while package redlock keeps the Locker, scripts, record format, queue and
// renewal. Go's internal rule keeps it out of reach of anyone else, so no
// exported API of redlock carries these types.
//
// Replies come in redigo's shapes, which the driver parses: nil for a nil
// reply, int64, []byte for a bulk string, string for a status, []any for
// an array; a server's error reply is a redigo redis.Error (so that NOSCRIPT,
// WRONGPASS... are recognised alike). Any other error is a failure to
// reach the server (driver.ErrUnavailable).
package backend

import (
	"context"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/redlock/internal/pipeline"
)

// Cmd is one command of a batch; Result its reply or error.
type (
	Cmd    = pipeline.Cmd
	Result = pipeline.Result
)

// Transport carries a node's commands.
type Transport interface {
	// Do sends one command and returns its reply, by deadline.
	Do(ctx context.Context, deadline time.Time, cmd string, args []any) (any, error)

	// DoAll sends cmds in one round trip where it can and sets out[i] to
	// the reply or error of cmds[i]. Unless the Node says NoReplicaAcks,
	// it sends them in order on one connection, with no other command
	// between them, and sends them again only whole, on another: a batch
	// may end in WAIT (redlock.WithReplicaAcks), which counts the writes
	// its own connection made.
	DoAll(ctx context.Context, deadline time.Time, cmds []Cmd, out []Result)

	// Close releases what the transport made (never an application's
	// client).
	Close()
}

// Sub is one subscription connection of a node.
type Sub interface {
	// Subscribe sends SUBSCRIBE channel without waiting for its
	// confirmation, which Receive returns.
	Subscribe(channel string) error

	// Ping sends a PING without waiting for its answer, so that a live
	// connection has something to read within Receive's timeout.
	Ping() error

	// Receive waits up to timeout for the next event. An error ends the
	// connection: the caller closes it and dials another.
	Receive(timeout time.Duration) (Event, error)

	// Close closes the connection; it ends a Receive under way.
	Close() error
}

// Event is what a subscription connection received.
type Event struct {
	Kind EventKind
	Data []byte // a message's payload
}

// EventKind tells events apart.
type EventKind int

const (
	Other        EventKind = iota // a pong, an unsubscribe...
	Message                       // a message published on the channel
	Subscribed                    // the server confirmed the subscription
	Unsubscribed                  // the server ended a sharded subscription (its slot moved): dial again
)

// Node is one server as a module supplies it.
type Node struct {
	Name string                                 // never credentials
	T    Transport                              // its commands
	Dial func(ctx context.Context) (Sub, error) // a subscription connection; nil: waiters poll

	// DialShard, for a Redis Cluster (nil otherwise), dials a connection
	// to the master serving channel's slot and subscribes it to channel
	// by SSUBSCRIBE (sharded pub/sub, Redis 7), waiting for the
	// confirmation, which its first Receive returns. When every node has
	// one, releases wake waiters by SPUBLISH in the lock key's slot and a
	// Locker subscribes per key it waits on (Dial is then not used).
	DialShard func(ctx context.Context, channel string) (Sub, error)

	// NoReplicaAcks, when not "", says why T cannot send a batch on one
	// connection of the server its writes go to (a Redis Cluster client
	// routes a keyless WAIT elsewhere): redlock.WithReplicaAcks is then
	// refused at Connect, with it.
	NoReplicaAcks string
}

// NewConnector is set by package redlock: a Connector whose Connect makes
// a Locker over the nodes newNodes returns (called once per Connect; an
// error is Connect's). opts is a []redlock.Option.
var NewConnector func(newNodes func() ([]Node, error), opts any) driver.Connector
