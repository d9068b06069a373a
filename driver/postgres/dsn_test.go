package postgres

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mutexkit/mutexkit/driver"
)

// A URL DSN is read as RFC 3986 says (issue 12, item 3): the authority ends
// at the first "/", "?" or "#", and its user info at the last "@" in it, so
// an "@" in a query value, the path or a fragment never moves the host,
// and the password goes nowhere else. Query parameters override the parts
// of the URL, as in libpq, and a parameter name that is not a keyword is
// refused rather than spliced into the keyword string.
func TestURLAuthority(t *testing.T) {
	for _, c := range []struct {
		dsn                         string
		host                        string
		port                        uint16
		user, password, db, appName string
	}{
		{"postgres://u:pw@127.0.0.1:5432/test?application_name=a@127.0.0.1:7000", "127.0.0.1", 5432, "u", "pw", "test", "a@127.0.0.1:7000"},
		{"postgres://u:pw@127.0.0.1:5432/test?application_name=a%40127.0.0.1%3A7000&sslmode=disable", "127.0.0.1", 5432, "u", "pw", "test", "a@127.0.0.1:7000"},
		{"postgres://u:p@ss@db.example:6432/test", "db.example", 6432, "u", "p@ss", "test", ""},
		{"postgres://u:pw@db.example/te@st:7000", "db.example", 5432, "u", "pw", "te@st:7000", ""},
		{"postgres://u:pw@db.example:5433/test#x@evil.example:7000", "db.example", 5433, "u", "pw", "test", ""},
		{"postgres://u:pw@db.example:5433?dbname=test&application_name=x@evil.example:1", "db.example", 5433, "u", "pw", "test", "x@evil.example:1"},
		{"postgresql://u%40corp:p%2Fw%3F@[::1]:5434/test", "::1", 5434, "u@corp", "p/w?", "test", ""},
		{"postgres://u:pw@[::1]/test", "::1", 5432, "u", "pw", "test", ""},
		{"postgres://u@db.example:5433/ignored?host=other.example&port=5435&dbname=test", "other.example", 5435, "u", "", "test", ""},
		{"postgres://u:pw@zzz.example:6000/zzz?host=aaa.example&port=5433&dbname=aaa&user=v&password=qq", "aaa.example", 5433, "v", "qq", "aaa", ""},
		{"postgres:///test?host=/var/run/postgresql", "/var/run/postgresql", 5432, "", "", "test", ""},
		{"postgres://u:it's%20a%5C%27pw@db.example/test", "db.example", 5432, "u", `it's a\'pw`, "test", ""},
	} {
		cfg := defaultConfig()
		info, err := parseDSN(c.dsn, &cfg)
		if err != nil {
			t.Errorf("parseDSN(%q): %v", c.dsn, err)
			continue
		}
		pc := info.pq
		if c.user == "" {
			c.user = pc.User // lib/pq's default, the OS user's name
		}
		if pc.Host != c.host || pc.Port != c.port || pc.User != c.user || pc.Password != c.password ||
			pc.Database != c.db || pc.ApplicationName != c.appName || len(pc.Multi) != 0 {
			t.Errorf("parseDSN(%q): host %q port %d user %q password %q dbname %q application_name %q, %d more hosts; want %q %d %q %q %q %q",
				c.dsn, pc.Host, pc.Port, pc.User, pc.Password, pc.Database, pc.ApplicationName, len(pc.Multi),
				c.host, c.port, c.user, c.password, c.db, c.appName)
		}
		if info.password != c.password {
			t.Errorf("parseDSN(%q): the password to redact is %q; want %q", c.dsn, info.password, c.password)
		}
	}

	// Several hosts, as libpq writes them: each with its port, or none with
	// one (net/url takes a port only at the end).
	for _, c := range []struct {
		dsn   string
		hosts []string
		ports []uint16
	}{
		{"postgres://u:pw@h1.example:5433,h2.example:5434/test", []string{"h1.example", "h2.example"}, []uint16{5433, 5434}},
		{"postgres://u:pw@h1.example,h2.example,h3.example/test?target_session_attrs=read-write", []string{"h1.example", "h2.example", "h3.example"}, []uint16{5432, 5432, 5432}},
	} {
		cfg := defaultConfig()
		info, err := parseDSN(c.dsn, &cfg)
		if err != nil {
			t.Errorf("parseDSN(%q): %v", c.dsn, err)
			continue
		}
		pc := info.pq
		hosts, ports := []string{pc.Host}, []uint16{pc.Port}
		for _, m := range pc.Multi {
			hosts, ports = append(hosts, m.Host), append(ports, m.Port)
		}
		if !slices.Equal(hosts, c.hosts) || !slices.Equal(ports, c.ports) {
			t.Errorf("parseDSN(%q): hosts %q, ports %d; want %q, %d", c.dsn, hosts, ports, c.hosts, c.ports)
		}
	}

	for _, dsn := range []string{
		"postgres://u:pw@h/test?host%3D%27evil%27%20port=7000",
		"postgres://u:pw@h/test?sslmode%20=disable",
		"postgres://u:pw@h/test?=x",
	} {
		cfg := defaultConfig()
		_, err := parseDSN(dsn, &cfg)
		if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("parseDSN(%q): %v; want ErrInvalid (a parameter name that is no keyword)", dsn, err)
		}
	}
}

// A keyword DSN is read by lib/pq, with two checks of this driver's: a key
// left empty before the next one is refused, as libpq would take the next
// pair, password and all, for its value; and lib/pq's complaints, which
// quote keys and values, reach the caller without them.
func TestKeywordDSN(t *testing.T) {
	const pw = "s3cr3t-Pw"
	for _, c := range []struct{ dsn, want string }{
		{"host=h dbname= password=" + pw, "no value before the next key"},
		{"host=h dbname=\t\n password=" + pw, "no value before the next key"},
		{"host=h application_name= password=" + pw + " dbname=d", "no value before the next key"},
		{"host=h dbname=d password=" + pw + " x", "cannot read it"},
		{"host=h dbname=d " + pw, "cannot read it"},
		{"host=h dbname='d password=" + pw, "cannot read it"},
		{"host=h dbname=d sslmode=" + pw, `value of "sslmode"`},
		{"host=h dbname=d =" + pw, "no key"},
	} {
		cfg := defaultConfig()
		_, err := parseDSN(c.dsn, &cfg)
		if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), pw) {
			t.Errorf("parseDSN(%q): %v; want ErrInvalid mentioning %q, without the password", c.dsn, err, c.want)
		}
	}
	for _, c := range []struct{ dsn, db, password, app string }{
		{"host=h dbname='' password=" + pw, "", pw, ""}, // then refused: no database
		{"host=h dbname=a=b password='x= y=z'", "a=b", "x= y=z", ""},
		{"host=h dbname=d application_name='a= dbname=e' password=" + pw, "d", pw, "a= dbname=e"},
		{"dbname = d host = h password = '" + pw + "'", "d", pw, ""},
	} {
		cfg := defaultConfig()
		info, err := parseDSN(c.dsn, &cfg)
		if c.db == "" {
			if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), "no database") {
				t.Errorf("parseDSN(%q): %v; want no database", c.dsn, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseDSN(%q): %v", c.dsn, err)
			continue
		}
		if pc := info.pq; pc.Database != c.db || pc.Password != c.password || pc.ApplicationName != c.app || info.password != c.password {
			t.Errorf("parseDSN(%q): dbname %q password %q application_name %q; want %q %q %q", c.dsn, pc.Database, pc.Password, pc.ApplicationName, c.db, c.password, c.app)
		}
	}

	// This driver's parameters are taken out; the server's are kept.
	cfg := defaultConfig()
	info, err := parseDSN("host=h dbname=d mutexkit_namespace='a b' mutexkit_max_keys=7 search_path=s", &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.namespace != "a b" || cfg.maxKeys != 7 || len(info.pq.Runtime) != 1 || info.pq.Runtime["search_path"] != "s" {
		t.Errorf("namespace %q, max keys %d, run-time parameters %q; want \"a b\", 7, search_path only", cfg.namespace, cfg.maxKeys, info.pq.Runtime)
	}
}
