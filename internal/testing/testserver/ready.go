package testserver

import (
	"fmt"
	"os"
	"time"
)

// started is a server process just started: how to tell it answers, and
// what to say when it does not.
type started struct {
	name    string        // "postgres on port 5433"
	exited  chan struct{} // closed when the process exits
	ping    func() error
	stop    func() // called when it does not answer in time
	log     string // its log file, quoted on failure
	timeout time.Duration
	poll    time.Duration
}

// waitReady polls until the server answers, it exits, or the timeout
// passes; the errors quote the end of its log.
func (s started) waitReady() error {
	deadline := time.Now().Add(s.timeout)
	for {
		err := s.ping()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited: %s", s.name, s.tail())
		case <-time.After(s.poll):
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("%s did not answer within %v (%v): %s", s.name, s.timeout, err, s.tail())
		}
	}
}

func (s started) tail() string {
	out, _ := os.ReadFile(s.log)
	return lastLines(string(out), 6)
}
