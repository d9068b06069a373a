package postgres

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
)

// paramPrefix marks this driver's own DSN parameters; they are removed
// before the DSN reaches lib/pq.
const paramPrefix = "mutexkit_"

// dsnInfo is a parsed DSN: what lib/pq gets, and what is secret in it.
type dsnInfo struct {
	pq       string // keyword form, without this driver's parameters
	password string // to redact from errors
	pqConfig pq.Config
}

// parseDSN splits dsn into lib/pq's part and this driver's parameters,
// applied to cfg. Errors match driver.ErrInvalid and never quote the DSN.
func parseDSN(dsn string, cfg *config) (dsnInfo, error) {
	var info dsnInfo
	var params []kv
	switch {
	case strings.TrimSpace(dsn) == "":
		return info, invalidDSN("it is empty; want postgres://user@host:5432/dbname or \"host=... dbname=...\"")
	case strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://"):
		u, err := url.Parse(dsn)
		if err != nil {
			// url.Parse errors quote the whole URL, password and all.
			return info, invalidDSN("it is a malformed URL")
		}
		if u.User != nil {
			info.password, _ = u.User.Password()
		}
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return info, invalidDSN("its query string is malformed")
		}
		if pw := q.Get("password"); pw != "" {
			info.password = pw
		}
		for k, vs := range q {
			if strings.HasPrefix(k, paramPrefix) {
				for _, v := range vs {
					params = append(params, kv{k, v})
				}
				delete(q, k)
			}
		}
		pairs, err := urlKeywords(u, q)
		if err != nil {
			return info, err
		}
		info.pq = formatKeywords(pairs)
	default:
		pairs, err := parseKeywords(dsn)
		if err != nil {
			return info, invalidDSN(err.Error())
		}
		var rest []kv
		for _, p := range pairs {
			switch {
			case strings.HasPrefix(p.k, paramPrefix):
				params = append(params, p)
			case p.k == "password":
				info.password = p.v
				rest = append(rest, p)
			default:
				rest = append(rest, p)
			}
		}
		info.pq = formatKeywords(rest)
	}
	for _, p := range params {
		if err := applyParam(cfg, p.k, p.v); err != nil {
			return info, err
		}
	}
	pc, err := pq.NewConfig(info.pq)
	if err != nil {
		return info, invalidDSN(redact(err.Error(), info.password))
	}
	if pc.Database == "" {
		// libpq would fall back to the user's name: advisory locks are per
		// database, so two applications with different users would
		// silently lock in different databases.
		return info, invalidDSN("it names no database; add /dbname to the URL or dbname=... (advisory locks are per database)")
	}
	info.pqConfig = pc
	return info, nil
}

// urlKeywords turns a postgres:// URL, whose query is q, into libpq
// keyword pairs, as libpq reads a URI: user and password from the user
// info, host and port from the authority (hosts separated by commas, each
// with its port), dbname from the path, then every query parameter, which
// overrides them. net/url has split the URL as RFC 3986 says: the
// authority ends at the first "/", "?" or "#", and its user info at the
// last "@" in it. A parameter name that is not a keyword is refused: it
// would be spliced into the keyword string, where "host='x' port" names
// two keywords.
func urlKeywords(u *url.URL, q url.Values) ([]kv, error) {
	var pairs []kv
	add := func(k, v string) {
		if v != "" { // as lib/pq did: an empty value is no value
			pairs = append(pairs, kv{k, v})
		}
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		add("user", u.User.Username())
		add("password", pw)
	}
	if u.Host != "" {
		var hosts, ports []string
		for _, hp := range strings.Split(u.Host, ",") {
			host, port := hp, ""
			if h, p, err := net.SplitHostPort(hp); err == nil {
				host, port = h, p
			} else if strings.HasPrefix(hp, "[") && strings.HasSuffix(hp, "]") {
				host = hp[1 : len(hp)-1] // an IPv6 address without a port
			}
			hosts, ports = append(hosts, host), append(ports, port)
		}
		add("host", strings.Join(hosts, ","))
		if strings.Join(ports, "") != "" {
			for i, p := range ports {
				if p == "" {
					ports[i] = "5432" // libpq's default, as lib/pq fills in
				}
			}
			add("port", strings.Join(ports, ","))
		}
	}
	add("dbname", strings.TrimPrefix(u.Path, "/"))
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !isKeyword(k) {
			return nil, invalidDSN("a query parameter has a name that is not a libpq keyword (letters, digits and _)")
		}
		add(k, q.Get(k))
	}
	return pairs, nil
}

// isKeyword reports whether k can be a libpq keyword: letters, digits and
// underscores.
func isKeyword(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range []byte(k) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func invalidDSN(why string) error {
	return fmt.Errorf("postgres: bad DSN: %s: %w", why, driver.ErrInvalid)
}

// applyParam sets one of this driver's DSN parameters.
func applyParam(cfg *config, k, v string) error {
	seconds := func() (time.Duration, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, invalidDSN(fmt.Sprintf("%s=%q: want a whole number of seconds", k, v))
		}
		return time.Duration(n) * time.Second, nil
	}
	switch k {
	case "mutexkit_namespace":
		cfg.namespace = v
	case "mutexkit_heartbeat", "mutexkit_statement_timeout":
		d, err := time.ParseDuration(v)
		if err != nil {
			if n, err2 := strconv.ParseFloat(v, 64); err2 == nil {
				d, err = time.Duration(n*float64(time.Second)), nil
			}
		}
		if err != nil {
			return invalidDSN(fmt.Sprintf("%s=%q: want a duration such as 1s or 500ms", k, v))
		}
		if k == "mutexkit_heartbeat" {
			WithHeartbeat(d)(cfg)
		} else {
			WithStatementTimeout(d)(cfg)
		}
	case "mutexkit_fencing":
		on, err := strconv.ParseBool(strings.NewReplacer("on", "true", "off", "false", "yes", "true", "no", "false").Replace(strings.ToLower(v)))
		if err != nil {
			return invalidDSN(fmt.Sprintf("%s=%q: want on or off", k, v))
		}
		cfg.fencing = on
	case "mutexkit_keepalive_idle":
		d, err := seconds()
		if err != nil {
			return err
		}
		WithKeepalive(d, cfg.keepIntvl, cfg.keepCount)(cfg)
	case "mutexkit_keepalive_interval":
		d, err := seconds()
		if err != nil {
			return err
		}
		WithKeepalive(cfg.keepIdle, d, cfg.keepCount)(cfg)
	case "mutexkit_keepalive_count":
		n, err := strconv.Atoi(v)
		if err != nil {
			return invalidDSN(fmt.Sprintf("%s=%q: want a whole number", k, v))
		}
		WithKeepalive(cfg.keepIdle, cfg.keepIntvl, n)(cfg)
	case "mutexkit_max_keys":
		n, err := strconv.Atoi(v)
		if err != nil {
			return invalidDSN(fmt.Sprintf("%s=%q: want a whole number", k, v))
		}
		WithMaxKeys(n)(cfg)
	default:
		return invalidDSN(fmt.Sprintf("unknown parameter %q (known: mutexkit_namespace, mutexkit_heartbeat, mutexkit_fencing, "+
			"mutexkit_statement_timeout, mutexkit_keepalive_idle, mutexkit_keepalive_interval, mutexkit_keepalive_count, mutexkit_max_keys)", k))
	}
	if cfg.err != nil {
		err := cfg.err
		cfg.err = nil
		return err
	}
	return nil
}

type kv struct{ k, v string }

// parseKeywords reads a libpq keyword/value connection string: key = value
// pairs separated by spaces, values single-quoted (with \' and \\) or bare
// (with backslash escapes). Errors name no value.
func parseKeywords(s string) ([]kv, error) {
	var out []kv
	r := s // bytes: every delimiter is ASCII, and other bytes pass through as they are, valid UTF-8 or not
	i := 0
	skip := func() {
		for i < len(r) && isSpace(rune(r[i])) {
			i++
		}
	}
	for {
		skip()
		if i == len(r) {
			return out, nil
		}
		start := i
		for i < len(r) && r[i] != '=' && !isSpace(rune(r[i])) {
			i++
		}
		key := string(r[start:i])
		skip()
		if i == len(r) || r[i] != '=' {
			// Keys are named by position only: after a misquoted value, a
			// "key" may be a piece of the password.
			return nil, fmt.Errorf("missing \"=\" after key number %d", len(out)+1)
		}
		i++
		afterEq := i
		skip()
		spaced := i > afterEq
		quoted := i < len(r) && r[i] == '\''
		var val strings.Builder
		if quoted {
			i++
			closed := false
			for i < len(r) {
				c := r[i]
				i++
				if c == '\\' && i < len(r) {
					val.WriteByte(r[i])
					i++
					continue
				}
				if c == '\'' {
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("unterminated quoted value of key number %d", len(out)+1)
			}
		} else {
			for i < len(r) && !isSpace(rune(r[i])) {
				c := r[i]
				i++
				if c == '\\' && i < len(r) {
					c = r[i]
					i++
				}
				val.WriteByte(c)
			}
		}
		if key == "" {
			return nil, errors.New("empty key")
		}
		if spaced && !quoted && strings.Contains(val.String(), "=") {
			// "dbname= password=x": libpq skips the space and takes
			// "password=x" as the database name, which a server error would
			// then quote.
			return nil, fmt.Errorf("key number %d has no value before the next key (write key='' for an empty one)", len(out)+1)
		}
		out = append(out, kv{key, val.String()})
	}
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\v'
}

// formatKeywords writes pairs back as a connection string, every value
// quoted.
func formatKeywords(pairs []kv) string {
	var b strings.Builder
	esc := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p.k)
		b.WriteString("='")
		b.WriteString(esc.Replace(p.v))
		b.WriteByte('\'')
	}
	return b.String()
}

// redact removes secret from msg.
func redact(msg, secret string) string {
	if secret == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, secret, "xxxxx")
	if esc := url.QueryEscape(secret); esc != secret {
		msg = strings.ReplaceAll(msg, esc, "xxxxx")
	}
	if esc := url.PathEscape(secret); esc != secret {
		msg = strings.ReplaceAll(msg, esc, "xxxxx")
	}
	return msg
}

// redactedError shows a message with the password removed and still
// unwraps to the cause, for errors.Is.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactErr returns err with secret removed from its text.
func redactErr(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) &&
		!strings.Contains(err.Error(), url.QueryEscape(secret)) && !strings.Contains(err.Error(), url.PathEscape(secret)) {
		return err
	}
	return &redactedError{msg: redact(err.Error(), secret), err: err}
}
