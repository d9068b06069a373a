package middleware_test

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/mem"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// documented returns the values of the constants in names.go whose names
// begin with prefix: what the package says AttrOperation or AttrOutcome
// can be.
func documented(t *testing.T, prefix string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "names.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, prefix) {
					continue
				}
				v, err := strconv.Unquote(vs.Values[i].(*ast.BasicLit).Value)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, v)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestNamesDocumented: the values of mutexkit.operation and
// mutexkit.outcome that logs, metrics and spans carry are exactly the
// Operation and Outcome constants, when every operation is made to
// succeed, fail, contend, be lost or be closed.
func TestNamesDocumented(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		logs := &records{}
		reader := newReader()
		rec, tp := tracer()
		var fail failNext
		table := mem.NewTable()
		other := mutex.NewClient(mem.FromTable(table))
		defer other.Close()
		if _, err := other.NewMutex("held").TryLock(ctx); err != nil {
			t.Fatal(err)
		}
		c := mutex.NewClient(mem.FromTable(table), mutex.WithMiddleware(
			middleware.Logging(logs.logger()),
			middleware.Metrics(middleware.WithMeterProvider(reader.provider())),
			middleware.Tracing(tp),
			fail.middleware(),
		))

		a, _ := c.NewMutex("a").TryLock(ctx) // acquired
		c.NewMutex("held").TryLock(ctx)      // locked
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		c.NewMutex("held").Lock(wctx) // canceled
		cancel()
		fail.renew.Store(1)
		b, _ := c.NewMutex("b", mutex.WithTTL(time.Second)).Lock(ctx)
		time.Sleep(2 * time.Second) // renewed, and a renewal error
		a.Unlock(ctx)               // released
		fail.release.Store(1)
		d, _ := c.NewMutex("d").TryLock(ctx)
		d.Unlock(ctx)       // release error
		c.Inspect(ctx, "a") // ok
		fail.inspect.Store(1)
		c.Inspect(ctx, "a") // error
		c.Ping(ctx)         // ok
		fail.ping.Store(1)
		c.Ping(ctx) // error
		fail.acquire.Store(1)
		c.NewMutex("e").TryLock(ctx) // acquire error
		table.Drop("b")              // lost
		<-b.Done()
		c.NewMutex("f").TryLock(ctx)
		c.Close() // closed

		ops, outs := map[string]bool{}, map[string]bool{}
		for _, r := range logs.all(t) {
			ops[fmt.Sprint(r[middleware.AttrOperation])] = true
			outs[fmt.Sprint(r[middleware.AttrOutcome])] = true
		}
		for _, sets := range points(t, collect(t, reader.r)) {
			for _, s := range sets {
				if v, ok := s.Value(middleware.AttrOperation); ok {
					ops[v.AsString()] = true
				}
				if v, ok := s.Value(middleware.AttrOutcome); ok {
					outs[v.AsString()] = true
				}
			}
		}
		for _, s := range rec.Ended() {
			if o, ok := attrs(s.Attributes())[middleware.AttrOutcome]; ok {
				outs[o] = true
			}
		}
		if got, want := slices.Sorted(maps.Keys(ops)), documented(t, "Operation"); !slices.Equal(got, want) {
			t.Errorf("operations emitted: %v; documented (Operation*): %v", got, want)
		}
		if got, want := slices.Sorted(maps.Keys(outs)), documented(t, "Outcome"); !slices.Equal(got, want) {
			t.Errorf("outcomes emitted: %v; documented (Outcome*): %v", got, want)
		}
	})
}

// failNext fails the next n calls of each driver operation with
// driver.ErrUnavailable.
type failNext struct {
	acquire, release, renew, inspect, ping atomic.Int32
}

func (f *failNext) middleware() mutex.Middleware {
	return mutex.Middleware{Wrap: func(next driver.Locker, _ mutex.Info) driver.Locker {
		return &failingLocker{Locker: next, f: f}
	}}
}

var errInjected = fmt.Errorf("injected: %w", driver.ErrUnavailable)

type failingLocker struct {
	driver.Locker
	f *failNext
}

func (l *failingLocker) Acquire(ctx context.Context, req driver.AcquireRequest) (driver.Grant, error) {
	if l.f.acquire.Add(-1) >= 0 {
		return driver.Grant{}, errInjected
	}
	return l.Locker.Acquire(ctx, req)
}

func (l *failingLocker) Release(ctx context.Context, key string, owner driver.Owner) error {
	if l.f.release.Add(-1) >= 0 {
		return errInjected
	}
	return l.Locker.Release(ctx, key, owner)
}

func (l *failingLocker) Renew(ctx context.Context, batch []driver.Renewal) {
	if l.f.renew.Add(-1) >= 0 {
		for i := range batch {
			batch[i].Err = errInjected
		}
		return
	}
	l.Locker.Renew(ctx, batch)
}

func (l *failingLocker) Inspect(ctx context.Context, key string) (driver.Holder, bool, error) {
	if l.f.inspect.Add(-1) >= 0 {
		return driver.Holder{}, false, errInjected
	}
	return l.Locker.Inspect(ctx, key)
}

func (l *failingLocker) Ping(ctx context.Context) error {
	if l.f.ping.Add(-1) >= 0 {
		return errInjected
	}
	return l.Locker.Ping(ctx)
}
