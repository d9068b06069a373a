package mysql

import (
	"fmt"
	"net"
	"net/url"
	"os"
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
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, invalidDSN("its query string is malformed")
	}
	if err := takeParams(q, cfg); err != nil {
		return nil, err
	}
	socket := q.Get("socket")
	q.Del("socket")
	mc, err := gomysql.ParseDSN("/?" + q.Encode())
	if err != nil || q.Encode() == "" {
		if err != nil {
			return nil, invalidDSN(fmt.Sprintf("a parameter is not go-sql-driver's: %v", err))
		}
		mc = gomysql.NewConfig()
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
		var kept []string
		q := url.Values{}
		for kv := range strings.SplitSeq(query, "&") {
			k, v, _ := strings.Cut(kv, "=")
			if !strings.HasPrefix(k, paramPrefix) {
				kept = append(kept, kv)
				continue
			}
			uv, err := url.QueryUnescape(v)
			if err != nil {
				return nil, invalidDSN("parameter " + k + " is not URL-encoded")
			}
			q.Add(k, uv)
		}
		if err := takeParams(q, cfg); err != nil {
			return nil, err
		}
		if len(kept) > 0 {
			base += "?" + strings.Join(kept, "&")
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
		return nil, invalidDSN("not a URL, and not go-sql-driver's form user:password@tcp(host:port)/dbname: " + redact(err.Error(), pw))
	}
	return mc, nil
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
		case "mutexkit_hashed_names":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("true or false")
			}
			cfg.hashedNames = b
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
