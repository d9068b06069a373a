package redlock

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// Defaults of the DSN options and Options.
const (
	DefaultPrefix         = "mutexkit"
	DefaultDriftFactor    = 0.01
	DefaultDriftFixed     = 2 * time.Millisecond
	DefaultConnectTimeout = time.Second
	DefaultOpTimeout      = time.Second
	DefaultMaxIdle        = 64
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultPipelineConns  = 1

	// DefaultReplicaAcksTimeout is how long WAIT waits for the replicas
	// when the DSN option replica_acks comes without replica_acks_timeout.
	DefaultReplicaAcksTimeout = 100 * time.Millisecond

	// defaultTimeoutFraction of the TTL bounds each node's acquire when no
	// timeout is set: a node that answers later is as good as down, and
	// waiting longer eats the validity of the grant.
	defaultTimeoutFraction = 10
	minNodeTimeout         = 10 * time.Millisecond
	maxPipelineConns       = 64
)

// config is what a DSN and Options set.
type config struct {
	addrs    []string // host:port; never with credentials
	user     string
	password string
	db       int

	useTLS        bool
	tlsConfig     *tls.Config
	tlsCAFile     string
	tlsSkipVerify bool
	tlsServerName string

	prefix         string
	nodeTimeout    time.Duration // 0: TTL/defaultTimeoutFraction for acquire and renew, DefaultOpTimeout otherwise
	driftFactor    float64
	driftFixed     time.Duration
	connectTimeout time.Duration
	maxIdle        int
	maxActive      int
	idleTimeout    time.Duration
	pipeConns      int                     // pipelined connections per node; 0: the pool, one call per connection
	wrapConn       func(net.Conn) net.Conn // tests: wraps each pipelined connection's socket
	pipeAlways     bool                    // tests: a call alone takes the pipe too
	sendAll        bool                    // tests: every waiting attempt reaches the server (none answered by the client)
	acks           replicaAcks             // WAIT after each acquire and renewal (replicas 0: none)
	listQueue      bool                    // one server's lock and queue in a list (list.go); tests turn it off

	err error // the first bad Option (or FromPools argument), matching driver.ErrInvalid
}

func defaultConfig() config {
	return config{
		prefix:         DefaultPrefix,
		driftFactor:    DefaultDriftFactor,
		driftFixed:     DefaultDriftFixed,
		connectTimeout: DefaultConnectTimeout,
		maxIdle:        DefaultMaxIdle,
		idleTimeout:    DefaultIdleTimeout,
		pipeConns:      DefaultPipelineConns,
		listQueue:      true,
	}
}

// dsnErrorf reports a malformed DSN, matching driver.ErrInvalid. Its
// text never quotes the DSN, which may carry a password.
func dsnErrorf(format string, args ...any) error {
	return fmt.Errorf("redlock: DSN: %s: %w", fmt.Sprintf(format, args...), driver.ErrInvalid)
}

// parseDSN reads redis[s]://[user:pass@]host:port[,host:port...][/db][?options].
// It parses by hand rather than with url.Parse, whose errors quote the
// whole URL, password included.
func parseDSN(dsn string) (config, error) {
	cfg := defaultConfig()
	var rest string
	switch {
	case strings.HasPrefix(dsn, "redis://"):
		rest = dsn[len("redis://"):]
	case strings.HasPrefix(dsn, "rediss://"):
		rest = dsn[len("rediss://"):]
		cfg.useTLS = true
	default:
		return cfg, dsnErrorf("want redis://host:port[,host:port...][/db][?options] or rediss:// for TLS")
	}
	// The authority (user info and hosts) ends at the first '/', '?' or
	// '#' (RFC 3986), and the user info at its last '@': an '@' in an
	// option value (prefix=team@...) must not make the text before it a
	// password, sent to whatever host follows.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		userinfo := authority[:at]
		authority = authority[at+1:]
		user, pass, hasPass := strings.Cut(userinfo, ":")
		var err error
		if cfg.user, err = url.PathUnescape(user); err != nil {
			return cfg, dsnErrorf("user name: bad %%-escape") // the escape error quotes the text
		}
		if hasPass {
			if cfg.password, err = url.PathUnescape(pass); err != nil {
				return cfg, dsnErrorf("password: bad %%-escape")
			}
		}
	}
	if err := cfg.parseAddress(authority, tail); err != nil {
		if strings.Contains(tail, "@") {
			// Likely a password with an unescaped '/', '?' or '#', cut
			// there: its pieces are in the text an error would quote.
			return cfg, dsnErrorf("bad host list, database or options (not quoted: an '@' after the host list suggests a password holding '/', '?' or '#'; percent-escape them as %%2F, %%3F, %%23)")
		}
		return cfg, err
	}
	return cfg, nil
}

// parseAddress reads the host list (authority, without user info) and
// what follows it: [/db][?options].
func (cfg *config) parseAddress(authority, tail string) error {
	if strings.Contains(tail, "#") {
		return dsnErrorf("a DSN has no #fragment (percent-escape '#' in a password as %%23)")
	}
	dbPart, query, _ := strings.Cut(tail, "?")
	dbPart, hasDB := strings.CutPrefix(dbPart, "/")
	if authority == "" {
		return dsnErrorf("no host")
	}
	for h := range strings.SplitSeq(authority, ",") {
		addr, err := parseHost(h)
		if err != nil {
			return err
		}
		cfg.addrs = append(cfg.addrs, addr)
	}
	if err := checkNodeCount(len(cfg.addrs)); err != nil {
		return dsnErrorf("%v", err)
	}
	if hasDB && dbPart != "" {
		db, err := strconv.Atoi(dbPart)
		if err != nil || db < 0 {
			return dsnErrorf("database %q is not a number", dbPart)
		}
		cfg.db = db
	}
	return cfg.parseOptions(query)
}

// parseHost checks one host[:port] and returns host:port.
func parseHost(h string) (string, error) {
	if h == "" {
		return "", dsnErrorf("empty host in the host list")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil { // no port: the default one
		bracketed := strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]")
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), "6379"
		if strings.ContainsAny(host, "[]") || (strings.Contains(host, ":") != bracketed) {
			return "", dsnErrorf("bad host %q", h)
		}
	}
	if host == "" {
		return "", dsnErrorf("empty host in %q", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", dsnErrorf("bad port in %q", h)
	}
	return net.JoinHostPort(host, port), nil
}

// checkNodeCount accepts 1 node (a single-instance lock) or 3 and more
// (Redlock). Two nodes give a quorum of both: no fault is tolerated, yet
// neither node's counter can fence; it is almost certainly a typo.
func checkNodeCount(n int) error {
	switch {
	case n == 0:
		return errors.New("no host")
	case n == 2:
		return errors.New("2 nodes: give 1 (single instance) or 3 or more independent nodes (Redlock); with 2 the quorum is both, so one failure stops locking")
	}
	return nil
}

func (cfg *config) parseOptions(query string) error {
	if query == "" {
		return nil
	}
	vals, err := url.ParseQuery(query)
	if err != nil {
		return dsnErrorf("options: %v", err) // the query holds no password
	}
	for name, vs := range vals {
		v := vs[len(vs)-1]
		var err error
		switch name {
		case "timeout":
			cfg.nodeTimeout, err = positiveDuration(v)
		case "connect_timeout":
			cfg.connectTimeout, err = positiveDuration(v)
		case "drift_factor":
			cfg.driftFactor, err = strconv.ParseFloat(v, 64)
			if err == nil && (cfg.driftFactor < 0 || cfg.driftFactor >= 0.5) {
				err = errors.New("want a fraction in [0, 0.5)")
			}
		case "drift_fixed":
			cfg.driftFixed, err = time.ParseDuration(v)
			if err == nil && cfg.driftFixed < 0 {
				err = errors.New("negative")
			}
		case "pool_max_idle":
			cfg.maxIdle, err = nonNegativeInt(v)
		case "pool_max_active":
			cfg.maxActive, err = nonNegativeInt(v)
		case "pipeline":
			cfg.pipeConns, err = nonNegativeInt(v)
			if err == nil && cfg.pipeConns > maxPipelineConns {
				err = fmt.Errorf("at most %d connections", maxPipelineConns)
			}
		case "pool_idle_timeout":
			cfg.idleTimeout, err = positiveDuration(v)
		case "prefix":
			err = checkPrefix(v)
			cfg.prefix = v
		case "replica_acks":
			cfg.acks.replicas, err = nonNegativeInt(v)
			if err == nil && cfg.acks.timeout == 0 {
				cfg.acks.timeout = DefaultReplicaAcksTimeout
			}
		case "replica_acks_timeout":
			cfg.acks.timeout, err = positiveDuration(v)
		case "tls_ca":
			cfg.tlsCAFile = v
		case "tls_server_name":
			cfg.tlsServerName = v
		case "tls_skip_verify":
			cfg.tlsSkipVerify, err = strconv.ParseBool(v)
		default:
			return dsnErrorf("unknown option %q", name)
		}
		if err != nil {
			return dsnErrorf("option %s=%q: %v", name, v, err)
		}
	}
	if (cfg.tlsCAFile != "" || cfg.tlsSkipVerify || cfg.tlsServerName != "") && !cfg.useTLS {
		return dsnErrorf("tls_* options need a rediss:// DSN")
	}
	switch {
	case vals.Has("replica_acks_timeout") && cfg.acks.replicas == 0:
		return dsnErrorf("replica_acks_timeout needs replica_acks")
	case cfg.acks.replicas > 0 && cfg.acks.timeout < time.Millisecond:
		return dsnErrorf("replica_acks_timeout below 1ms (WAIT takes milliseconds)")
	}
	return nil
}

func positiveDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err == nil && d <= 0 {
		err = errors.New("want a positive duration")
	}
	return d, err
}

func nonNegativeInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err == nil && n < 0 {
		err = errors.New("negative")
	}
	return n, err
}

// drift is the clock drift allowed for a grant of ttl.
func (cfg *config) drift(ttl time.Duration) time.Duration {
	return time.Duration(float64(ttl)*cfg.driftFactor) + cfg.driftFixed
}

// validity returns ttl as the server keeps it (whole milliseconds: never
// longer than asked) and the validity of a grant of it: that less the
// drift.
func (cfg *config) validity(ttl time.Duration) (server, validity time.Duration) {
	server = ttl.Truncate(time.Millisecond)
	return server, server - cfg.drift(server)
}

// ttlTimeout bounds one node's answer to an acquire or renewal of ttl.
func (cfg *config) ttlTimeout(ttl time.Duration) time.Duration {
	if cfg.nodeTimeout > 0 {
		return cfg.nodeTimeout
	}
	return max(ttl/defaultTimeoutFraction, minNodeTimeout)
}

// opTimeout bounds one node's answer to a call without a TTL.
func (cfg *config) opTimeout() time.Duration {
	if cfg.nodeTimeout > 0 {
		return cfg.nodeTimeout
	}
	return DefaultOpTimeout
}
