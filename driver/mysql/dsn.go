package mysql

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/mutexkit/mutexkit/driver"
)

// paramPrefix marks this driver's DSN parameters, which never reach the
// server (go-sql-driver would send an unknown parameter as a SET).
const paramPrefix = "mutexkit_"

// parseDSN reads either DSN form into a go-sql-driver Config, and this
// driver's parameters into cfg. Errors match driver.ErrInvalid and never
// quote the DSN.
func parseDSN(dsn string, cfg *config) (*gomysql.Config, error) {
	var (
		mc  *gomysql.Config
		err error
	)
	if scheme, _, ok := strings.Cut(dsn, "://"); ok && strings.EqualFold(scheme, "mysql") {
		mc, err = parseURL(dsn, cfg)
	} else {
		mc, err = parseNative(dsn, cfg)
	}
	if err != nil {
		return nil, err
	}
	if mc.DBName == "" {
		return nil, invalidDSN("it names no database (mysql://user@host/dbname, or user@tcp(host)/dbname); the fencing table lives there")
	}
	mc.Logger = &gomysql.NopLogger{} // errors reach the caller, not stderr
	host, _ := os.Hostname()
	if attrs := "mutexkit_host:" + attrValue(host); mc.ConnectionAttributes == "" {
		mc.ConnectionAttributes = attrs
	} else {
		mc.ConnectionAttributes += "," + attrs
	}
	return mc, nil
}

// attrValue keeps a connection attribute's value clear of the separators.
func attrValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ',' || r == ':' || r < ' ' {
			return '_'
		}
		return r
	}, s)
}

// parseURL reads mysql://user:password@host:port/dbname?param=value: the
// host defaults to 127.0.0.1 and the port to 3306; socket=/path dials a
// Unix socket instead; other parameters are go-sql-driver's (tls=true,
// charset, ...).
func parseURL(dsn string, cfg *config) (*gomysql.Config, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Parse quotes the whole URL, password included.
		return nil, invalidDSN("it is not a valid URL (a password with reserved characters must be percent-encoded)")
	}
	if u.Opaque != "" {
		return nil, invalidDSN("want mysql://[user[:password]@]host[:port]/dbname")
	}
	rest, own, err := splitQuery(u.RawQuery, "socket")
	if err != nil {
		return nil, err
	}
	socket := own.Get("socket")
	own.Del("socket")
	if err := takeParams(own, cfg); err != nil {
		return nil, err
	}
	// go-sql-driver reads its parameters as written in its own DSN form
	// (it unescapes some values, not others: charset=utf8mb4,utf8 keeps
	// its comma), which is how a URL's query is written too: they pass as
	// they are. Only '/' is escaped, since ParseDSN splits at the last one;
	// no parameter that it reads unescaped can hold one.
	mc, err := gomysql.ParseDSN("/?" + strings.ReplaceAll(rest, "/", "%2F"))
	if err != nil {
		return nil, goParamError(err)
	}
	if u.User != nil {
		mc.User = u.User.Username()
		mc.Passwd, _ = u.User.Password()
	}
	switch {
	case socket != "":
		mc.Net, mc.Addr = "unix", socket
	default:
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "127.0.0.1"
		}
		if port == "" {
			port = "3306"
		}
		mc.Net, mc.Addr = "tcp", net.JoinHostPort(host, port)
	}
	// ParseDSN made the TLS configuration for its default address
	// (127.0.0.1): go-sql-driver's Connector makes it again from TLSConfig,
	// for this host, so that the certificate is checked against it.
	mc.TLS = nil
	mc.DBName = strings.TrimPrefix(u.Path, "/")
	if strings.Contains(mc.DBName, "/") {
		return nil, invalidDSN("its path must be /dbname")
	}
	return mc, nil
}

// parseNative reads go-sql-driver's own form,
// user:password@tcp(host:port)/dbname?param=value, after taking this
// driver's parameters out of it.
func parseNative(dsn string, cfg *config) (*gomysql.Config, error) {
	// go-sql-driver's parameters follow the first ? after the last /.
	base, query := dsn, ""
	if slash := strings.LastIndexByte(dsn, '/'); slash >= 0 {
		if i := strings.IndexByte(dsn[slash:], '?'); i >= 0 {
			base, query = dsn[:slash+i], dsn[slash+i+1:]
		}
	}
	if query != "" {
		rest, own, err := splitQuery(query)
		if err != nil {
			return nil, err
		}
		if err := takeParams(own, cfg); err != nil {
			return nil, err
		}
		if rest != "" {
			base += "?" + rest
		}
	}
	mc, err := gomysql.ParseDSN(base)
	if err != nil {
		// go-sql-driver's messages name parts of the DSN, never all of it;
		// the password is removed all the same.
		pw := ""
		if at := strings.LastIndexByte(base, '@'); at > 0 {
			if _, p, ok := strings.Cut(base[:at], ":"); ok {
				pw = p
			}
		}
		return nil, invalidDSN("go-sql-driver refused it (it is not a mysql:// URL; go-sql-driver's form is user:password@tcp(host:port)/dbname?param=value): " + redact(err.Error(), pw))
	}
	return mc, nil
}

// splitQuery takes this driver's parameters (mutexkit_..., and those named
// in also) out of a query string, unescaped; the rest is returned as
// written, for go-sql-driver.
func splitQuery(query string, also ...string) (rest string, own url.Values, err error) {
	var kept []string
	own = url.Values{}
	for kv := range strings.SplitSeq(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, paramPrefix) && !slices.Contains(also, k) {
			kept = append(kept, kv)
			continue
		}
		uv, err := url.QueryUnescape(v)
		if err != nil {
			return "", nil, invalidDSN("parameter " + k + " is not URL-encoded")
		}
		own.Add(k, uv)
	}
	return strings.Join(kept, "&"), own, nil
}

// goParamError is go-sql-driver's refusal of a parameter: an unknown name
// or a bad value. Its messages quote the value, never the password.
func goParamError(err error) error {
	return invalidDSN(fmt.Sprintf("go-sql-driver refused a parameter: %v", err))
}

// takeParams moves this driver's parameters from q into cfg.
func takeParams(q url.Values, cfg *config) error {
	for k, vs := range q {
		if !strings.HasPrefix(k, paramPrefix) {
			continue
		}
		v := vs[len(vs)-1]
		q.Del(k)
		bad := func(want string) error {
			return invalidDSN(fmt.Sprintf("parameter %s: want %s", k, want))
		}
		switch k {
		case "mutexkit_namespace":
			cfg.namespace = v
		case "mutexkit_statement_timeout", "mutexkit_idle_timeout":
			d, err := parseDuration(v)
			if err != nil || d <= 0 {
				return bad("a duration such as 5s, or seconds")
			}
			if k == "mutexkit_idle_timeout" {
				WithIdleTimeout(d)(cfg)
			} else {
				cfg.stmtTimeout = d
			}
		case "mutexkit_wait":
			switch v {
			case "server":
				cfg.serverWait = true
			case "poll":
				cfg.serverWait = false
			default:
				return bad("server or poll")
			}
		case "mutexkit_max_waiters":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return bad("a count, 0 or more")
			}
			cfg.maxWaiters = n
		default:
			return invalidDSN("unknown parameter " + k)
		}
	}
	return cfg.err
}

// parseDuration reads "5s" or a number of seconds.
func parseDuration(v string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(n * float64(time.Second)), nil
	}
	return time.ParseDuration(v)
}

func invalidDSN(why string) error {
	return fmt.Errorf("mysql: invalid DSN: %s: %w", why, driver.ErrInvalid)
}
