package mutex

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// NewClient returns a Client of a Connector the application built, as
// sql.OpenDB does: from a driver's NewConnector (a DSN with options in Go)
// or from a client the application already has (postgres.FromDB,
// redlock.FromPools).
func NewClient(c driver.Connector, opts ...Option) *Client {
	cfg := clientConfig{heartbeat: DefaultHeartbeat}
	for _, o := range opts {
		o(&cfg)
	}
	host, _ := os.Hostname() // unknown is fine: it only informs Inspect
	cl := &Client{
		connector: c,
		driver:    c.DriverName(),
		holder:    driver.Holder{Host: host, PID: os.Getpid()},
		keys:      make(map[string]*Lease),
		heartbeat: cfg.heartbeat,
		cfgErr:    cfg.err,
	}
	cl.closeCtx, cl.cancelClose = context.WithCancel(context.Background())
	for _, m := range cfg.middleware {
		if m.Wrap != nil {
			cl.wraps = append(cl.wraps, m.Wrap)
		}
		if m.Observer != nil {
			cl.observers = append(cl.observers, m.Observer)
		}
	}
	cl.renew.init(cl)
	return cl
}

// Client is a handle to one backend, safe for concurrent use, meant to be
// long-lived and shared (as *sql.DB is). It connects lazily, keeps its leases
// alive, and excludes its own Mutex values from each other by key without
// relying on the backend.
type Client struct {
	connector driver.Connector
	driver    string
	wraps     []func(driver.Locker, Info) driver.Locker
	observers []*Observer
	holder    driver.Holder // this process, as recorded with each grant
	heartbeat time.Duration // how often session leases are verified
	cfgErr    error         // a bad Option, reported by every operation

	connMu sync.Mutex
	locker driver.Locker // set once connected; read under mu

	mu          sync.Mutex
	closed      bool
	closeCtx    context.Context // cancelled by Close: wakes waiters, ends a Connect in flight
	cancelClose context.CancelFunc
	keys        map[string]*Lease   // keys this client holds or is acquiring
	queued      map[string][]*Lease // Mutex values waiting for a key in keys, in order
	cleanup     sync.WaitGroup      // releases running in the background

	renew renewer
}

// conn returns the Locker, connecting on first use.
func (c *Client) conn(ctx context.Context) (driver.Locker, error) {
	if c.cfgErr != nil {
		return nil, c.cfgErr
	}
	c.mu.Lock()
	l, closed := c.locker, c.closed
	c.mu.Unlock()
	if closed {
		return nil, errClientClosed
	}
	if l != nil {
		return l, nil
	}

	c.connMu.Lock()
	defer c.connMu.Unlock()
	c.mu.Lock()
	l = c.locker
	c.mu.Unlock()
	if l != nil {
		return l, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.closeCtx, cancel) // Close waits for a Connect in flight: end it
	defer stop()
	l, err := c.connector.Connect(ctx)
	if err != nil {
		if c.closeCtx.Err() != nil {
			return nil, errClientClosed
		}
		return nil, err
	}
	info := Info{Driver: c.driver}
	for i := len(c.wraps) - 1; i >= 0; i-- { // the first listed ends outermost
		l = c.wraps[i](l, info)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		l.Close()
		return nil, errClientClosed
	}
	c.locker = l
	return l, nil
}

// NewMutex returns a Mutex for key. Invalid keys or options are reported
// by the Mutex's methods, with errors matching ErrInvalid.
func (c *Client) NewMutex(key string, opts ...MutexOption) *Mutex {
	m := &Mutex{c: c, key: key, cfg: mutexConfig{ttl: DefaultTTL}}
	for _, o := range opts {
		o(&m.cfg)
	}
	if err := checkKey(key); err != nil {
		m.cfg.err = errors.Join(err, m.cfg.err)
	}
	return m
}

// Ping connects if need be and checks that the backend is reachable and
// fit to hold locks.
func (c *Client) Ping(ctx context.Context) error {
	l, err := c.conn(ctx)
	if err == nil {
		err = l.Ping(ctx)
	}
	if err != nil {
		return opError("ping", "", err)
	}
	return nil
}

// Holder describes the holder of a key, as far as the backend keeps it:
// host, process id, since when, fencing token, and the backend's id of the
// holding session (Session, to end it with). Zero fields are unknown.
type Holder = driver.Holder

// Inspect reports whether key is held, by any client, and by whom as far
// as the backend keeps it, without taking it. Where the driver cannot tell,
// the error matches errors.ErrUnsupported.
func (c *Client) Inspect(ctx context.Context, key string) (h Holder, held bool, err error) {
	if err := checkKey(key); err != nil {
		return Holder{}, false, opError("inspect", key, err, ErrInvalid)
	}
	l, err := c.conn(ctx)
	if err == nil {
		h, held, err = l.Inspect(ctx, key)
	}
	if err != nil {
		return Holder{}, false, opError("inspect", key, err)
	}
	return h, held, nil
}

// closeReleaseTimeout bounds the releases Close makes on its own.
const closeReleaseTimeout = 10 * time.Second

// Close ends every lease of this client, releases them on the backend,
// stops background work, waits for it and closes the driver. Later
// operations return ErrClosed. Close is idempotent.
//
// A lease ended by Close is not lost: its Err matches ErrClosed (not
// ErrLockLost), the context of a Do or TryDo running under it is cancelled
// with cause ErrClosed, and observers see an end matching ErrClosed. Its
// holder is no longer protected all the same, so a
// program shuts down in this order: stop starting work, cancel the
// contexts of the Do calls and wait for them to return (their Unlock
// releases each lock), then Close.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cancelClose()
	held := make([]*Lease, 0, len(c.keys))
	for _, l := range c.keys {
		held = append(held, l)
	}
	locker := c.locker
	c.mu.Unlock()

	c.renew.stop()

	ctx, cancel := context.WithTimeout(context.Background(), closeReleaseTimeout)
	defer cancel()
	var errs []error
	for _, l := range held {
		ended := opError("close", l.key, errClientClosed)
		if !l.acquiredYet() {
			l.end(ended) // its Lock is still running: start refuses the lease, and it gives up
			continue
		}
		wasHeld := l.end(ended)
		if wasHeld {
			c.observeEnd(l, ended)
		}
		if wasHeld || l.pendingRelease() {
			if err := locker.Release(ctx, l.key, l.owner); err != nil && !errors.Is(err, ErrNotHeld) {
				errs = append(errs, fmt.Errorf("release: %w", err))
			}
		}
		c.forget(l)
	}
	c.cleanup.Wait()
	c.waitConnect() // a Connect in flight finishes first, and sees closed
	if locker != nil {
		if err := locker.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return opError("close", "", err)
	}
	return nil
}

// waitConnect returns once no Connect is in flight: conn holds connMu
// across it.
func (c *Client) waitConnect() {
	c.connMu.Lock()
	defer c.connMu.Unlock()
}

// releaseInBackground gives up a grant an attempt may have made but will
// not use: one that raced a cancelled ctx, or whose reply was lost.
func (c *Client) releaseInBackground(l driver.Locker, key string, owner driver.Owner) {
	release := func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeReleaseTimeout)
		defer cancel()
		l.Release(ctx, key, owner) // best effort: TTL or session end frees it otherwise
	}
	c.mu.Lock()
	if c.closed { // Close may be waiting on cleanup already: no more Add
		c.mu.Unlock()
		release()
		return
	}
	c.cleanup.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.cleanup.Done()
		release()
	}()
}

// lockerNow returns the connected Locker; callers hold a lease, so there is one.
func (c *Client) lockerNow() driver.Locker {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.locker
}

// reserve claims key for l inside this client, waiting (when wait is set)
// for another Mutex of this client to let go of it. Waiters inside a
// client take the key in the order they asked for it: forget hands it to
// the first, so a release wakes one goroutine, not all of them.
func (c *Client) reserve(ctx context.Context, l *Lease, wait bool) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClientClosed
	}
	if c.keys[l.key] == nil {
		c.keys[l.key] = l
		c.mu.Unlock()
		return nil
	}
	if !wait {
		c.mu.Unlock()
		return errLocalHeld
	}
	if c.queued == nil {
		c.queued = make(map[string][]*Lease)
	}
	l.turn = make(chan struct{})
	c.queued[l.key] = append(c.queued[l.key], l)
	c.mu.Unlock()
	var err error
	select {
	case <-l.turn:
		if ctx.Err() == nil {
			return nil
		}
		err = waitEnded(ctxErr(ctx), errLocalHeld) // both came: the ctx wins
	case <-ctx.Done():
		err = waitEnded(ctxErr(ctx), errLocalHeld)
	case <-c.closeCtx.Done():
		err = errClientClosed
	}
	c.mu.Lock()
	if c.keys[l.key] == l { // handed the key as the wait ended: pass it on
		c.mu.Unlock()
		c.forget(l)
		return err
	}
	c.queued[l.key] = slices.DeleteFunc(c.queued[l.key], func(q *Lease) bool { return q == l })
	if len(c.queued[l.key]) == 0 {
		delete(c.queued, l.key)
	}
	c.mu.Unlock()
	return err
}

// forget drops l from the client: the key is free for its other Mutex
// values, and renewal stops.
func (c *Client) forget(l *Lease) {
	c.renew.remove(l)
	c.mu.Lock()
	if c.keys[l.key] == l {
		delete(c.keys, l.key)
		if q := c.queued[l.key]; len(q) > 0 && !c.closed { // closing: waiters see closeCtx
			next := q[0]
			if len(q) == 1 {
				delete(c.queued, l.key)
			} else {
				c.queued[l.key] = q[1:]
			}
			c.keys[l.key] = next
			close(next.turn)
		}
	}
	c.mu.Unlock()
}
