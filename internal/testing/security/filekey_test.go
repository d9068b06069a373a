//go:build linux

package security

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mutexkit/mutexkit/driver/file"
	"github.com/mutexkit/mutexkit/middleware"
	"github.com/mutexkit/mutexkit/mutex"
)

// customerKey is a lock key in the shape of customer data; the file
// driver's lock file name begins with it.
const customerKey = "customer-4711.jane.doe"

// keyLeaked reports whether text carries customerKey or its lock file's name.
func keyLeaked(text string) bool {
	return strings.Contains(text, customerKey) || strings.Contains(text, file.FileName(customerKey))
}

// TestNoKeyInFileDriverErrorsLogsSpans drives the file driver's error paths
// through package mutex with logging and tracing: an unwritable directory,
// a planted symlink, a corrupt token file, a removed lock file. No error,
// log record or span may carry the key or its lock file's name.
func TestNoKeyInFileDriverErrorsLogsSpans(t *testing.T) {
	dir := t.TempDir()
	lockPath := filepath.Join(dir, file.FileName(customerKey))
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	c := mutex.NewClient(file.FromDir(dir), mutex.WithHeartbeat(50*time.Millisecond), mutex.WithMiddleware(
		middleware.Tracing(middleware.WithTracerProvider(tp)), middleware.Logging(logger, middleware.WithLevel(slog.LevelDebug))))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil { // connects, before permissions are taken away
		t.Fatal(err)
	}
	m := c.NewMutex(customerKey)
	var errs []error
	mustFail := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error; the path under test was not driven", what)
		}
		errs = append(errs, err)
	}

	// An unwritable directory: root is made to lose its rights on one
	// thread (fsuid), anyone else by the directory's mode.
	if os.Geteuid() == 0 {
		var l *mutex.Lease
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			syscall.Setfsuid(65534)
			l, err = m.TryLock(ctx)
		}()
		<-done
		if err == nil { // setfsuid refused: the other paths still run
			t.Log("setfsuid refused: the unwritable directory is not driven")
			l.Unlock(ctx)
		}
		errs = append(errs, err)
	} else {
		if err := os.Chmod(dir, 0); err != nil {
			t.Fatal(err)
		}
		_, err := m.TryLock(ctx)
		os.Chmod(dir, 0o755)
		mustFail("TryLock in an unwritable directory", err)
	}
	os.Remove(lockPath)

	// A symlink planted in the lock file's place.
	if err := os.Symlink(filepath.Join(t.TempDir(), "target"), lockPath); err != nil {
		t.Fatal(err)
	}
	_, err := m.TryLock(ctx)
	mustFail("TryLock through a planted symlink", err)
	_, _, err = c.Inspect(ctx, customerKey)
	mustFail("Inspect through a planted symlink", err)
	os.Remove(lockPath)

	// A corrupt token file.
	if err := os.WriteFile(lockPath, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = m.TryLock(ctx)
	mustFail("TryLock on a corrupt token file", err)
	os.Remove(lockPath)

	// A lock file removed under its holder: the loss, then the Unlock.
	l, err := m.TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(lockPath); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-ctx.Done():
		t.Fatal("loss of a removed lock file not reported")
	}
	mustFail("Err of a lost lease", l.Err())
	mustFail("Unlock of a lost lease", l.Unlock(ctx))
	if err := c.Close(); err != nil {
		errs = append(errs, err)
	}

	for _, err := range errs {
		if err == nil {
			continue
		}
		if keyLeaked(err.Error()) || keyLeaked(fmt.Sprintf("%+v", err)) {
			t.Errorf("error carries the key: %v", err)
		}
		var me *mutex.Error
		if errors.As(err, &me) && me.Key != customerKey {
			t.Errorf("(*mutex.Error).Key = %q; want the key, which belongs there", me.Key)
		}
	}
	if keyLeaked(logs.String()) {
		t.Errorf("log carries the key:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"error"`) {
		t.Errorf("no log record carries an error: the check saw nothing:\n%s", logs.String())
	}
	checkSpans(t, rec.Ended(), "the key", keyLeaked)
}
