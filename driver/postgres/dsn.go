package postgres

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/lib/pq"

	"github.com/mutexkit/mutexkit/driver"
)

// paramPrefix marks this driver's own DSN parameters. lib/pq collects
// parameters it does not know in Config.Runtime, to send to the server;
// this driver's are taken out there.
const paramPrefix = "mutexkit_"

// dsnInfo is a parsed DSN.
type dsnInfo struct {
	pq       pq.Config // lib/pq's settings, without this driver's parameters
	password string    // to redact from errors
}

// parseDSN reads dsn, a libpq URL or keyword string, with pq.NewConfig, and
// applies this driver's parameters to cfg. Errors match driver.ErrInvalid
// and never quote the DSN.
func parseDSN(dsn string, cfg *config) (dsnInfo, error) {
	var info dsnInfo
	if strings.TrimSpace(dsn) == "" {
		return info, invalidDSN("it is empty; want postgres://user@host:5432/dbname or \"host=... dbname=...\"")
	}
	isURL := strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
	in := dsn
	if isURL {
		var err error
		if in, err = queryOnlyURL(dsn); err != nil {
			return info, err
		}
	}
	if !utf8.ValidString(in) {
		// lib/pq reads it as runes: a byte that is not UTF-8 would become
		// U+FFFD, in the password too.
		return info, invalidDSN("it is not valid UTF-8 (in the URL, once unescaped)")
	}
	pc, err := pq.NewConfig(in)
	if err != nil {
		return info, pqConfigError(err)
	}
	info.password = pc.Password
	if !isURL && swallowsKey(pc, dsn) {
		// "dbname= password=x": libpq and lib/pq skip the space and take
		// "password=x" as the database name, which a server error would
		// then quote.
		return info, invalidDSN("a key has no value before the next key (write key='' for an empty value)")
	}
	var ours []string
	for k := range pc.Runtime {
		switch {
		case k == "":
			return info, invalidDSN("a value has no key")
		case strings.HasPrefix(k, paramPrefix):
			ours = append(ours, k)
		}
	}
	sort.Strings(ours) // the same error for the same DSN
	for _, k := range ours {
		v := pc.Runtime[k]
		delete(pc.Runtime, k)
		if err := applyParam(cfg, k, v); err != nil {
			return info, err
		}
	}
	if pc.Database == "" {
		// libpq would fall back to the user's name: advisory locks are per
		// database, so two applications with different users would
		// silently lock in different databases.
		return info, invalidDSN("it names no database; add /dbname to the URL or dbname=... (advisory locks are per database)")
	}
	info.pq = pc
	return info, nil
}

// queryOnlyURL moves every part of a postgres:// URL into its query, where
// lib/pq reads it right, as libpq reads a URI: user and password from the
// user info, host and port from the authority (hosts separated by commas,
// each with its port), dbname from the path, each unless the query sets it.
// lib/pq's own reading of the other parts is wrong three ways: it lets the
// authority win over the query (it sorts "host='a'" against "host='b'"),
// keeps the brackets of "[::1]", and splits "h1:5433,h2:5434" at the last
// colon. net/url splits the URL as RFC 3986 says: the authority ends at the
// first "/", "?" or "#", and its user info at the last "@" in it. A
// parameter name that is not a keyword is refused: lib/pq splices names
// into a keyword string unquoted, where "host='x' port" names two
// keywords.
func queryOnlyURL(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Parse errors quote the whole URL, password and all.
		return "", invalidDSN("it is a malformed URL")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "", invalidDSN("its query string is malformed")
	}
	for k := range q {
		if !isKeyword(k) {
			return "", invalidDSN("a query parameter has a name that is not a libpq keyword (letters, digits and _)")
		}
	}
	def := func(k, v string) {
		if q.Get(k) == "" && v != "" { // as lib/pq reads a query: an empty value is no value
			q.Set(k, v)
		}
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		def("user", u.User.Username())
		def("password", pw)
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
		def("host", strings.Join(hosts, ","))
		if strings.Join(ports, "") != "" {
			for i, p := range ports {
				if p == "" {
					ports[i] = "5432" // libpq's default
				}
			}
			def("port", strings.Join(ports, ","))
		}
	}
	def("dbname", strings.TrimPrefix(u.Path, "/"))
	for k, vs := range q {
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return "", invalidDSN("the value of " + k + " is not valid UTF-8 once unescaped")
			}
		}
	}
	return "postgres://?" + q.Encode(), nil
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

// swallowsKey reports whether a value of pc begins with "key=" that follows
// an "=" and white space in the keyword DSN it was read from: "dbname=
// password=x", where the first key was meant to be empty.
func swallowsKey(pc pq.Config, dsn string) bool {
	for _, s := range settings(pc) {
		k, _, ok := strings.Cut(s.v, "=")
		if !ok || !isKeyword(k) {
			continue
		}
		for i := 0; ; {
			j := strings.Index(dsn[i:], k+"=")
			if j < 0 {
				break
			}
			at := i + j
			before := strings.TrimRightFunc(dsn[:at], unicode.IsSpace)
			if len(before) < at && strings.HasSuffix(before, "=") {
				return true
			}
			i = at + 1
		}
	}
	return false
}

// wrongValue matches lib/pq's complaint about one setting's value, which
// names the setting (a keyword or an environment variable) and then quotes
// the value.
var wrongValue = regexp.MustCompile(`^pq: wrong value for ("[a-z_]+"|\$[A-Z_]+): `)

// pqConfigError turns pq.NewConfig's error into one that cannot quote the
// password. lib/pq quotes keys and values (`missing "=" after "x"`,
// `parsing "x"`), and after a misplaced quote those may be pieces of the
// password; what is kept is the setting's name, or a message that quotes
// nothing.
func pqConfigError(err error) error {
	msg := err.Error()
	if m := wrongValue.FindStringSubmatch(msg); m != nil {
		return invalidDSN("lib/pq refuses the value of " + m[1])
	}
	for _, safe := range []string{"pq: could not match ", "pq: environment variable "} {
		if strings.HasPrefix(msg, safe) && !strings.ContainsAny(msg, `"'`) {
			return invalidDSN(strings.TrimPrefix(msg, "pq: "))
		}
	}
	return invalidDSN("lib/pq cannot read it (a key without \"=\", an unterminated quote, a backslash at the end?); " +
		"its message is withheld, as it may quote the password")
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
	case "mutexkit_statement_timeout":
		d, err := time.ParseDuration(v)
		if err != nil {
			if n, err2 := strconv.ParseFloat(v, 64); err2 == nil {
				d, err = time.Duration(n*float64(time.Second)), nil
			}
		}
		if err != nil {
			return invalidDSN(fmt.Sprintf("%s=%q: want a duration such as 5s or 500ms", k, v))
		}
		WithStatementTimeout(d)(cfg)
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
		return invalidDSN(fmt.Sprintf("unknown parameter %q (known: mutexkit_namespace, mutexkit_statement_timeout, "+
			"mutexkit_keepalive_idle, mutexkit_keepalive_interval, mutexkit_keepalive_count, mutexkit_max_keys)", k))
	}
	if cfg.err != nil {
		err := cfg.err
		cfg.err = nil
		return err
	}
	return nil
}
