package postgres

import (
	"reflect"
	"testing"

	"github.com/lib/pq"
)

// settings writes every setting lib/pq reads from a connection string (so
// swallowsKey sees every value): each field has a type it can write, and
// the values of a DSN with many set come out as given.
func TestSettingsWritesEveryField(t *testing.T) {
	typ := reflect.TypeFor[pq.Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if k := f.Tag.Get("postgres"); k == "" || k == "-" || !f.IsExported() {
			continue
		}
		if _, ok := settingString(reflect.New(f.Type).Elem()); !ok {
			t.Errorf("pq.Config.%s (%s) has a type settings cannot write", f.Name, f.Type)
		}
	}
	for _, tc := range []struct {
		dsn  string
		want map[string]string
	}{
		{"host=h1,h2 port=5433,5434 dbname=d user=u password='p w' sslmode=disable connect_timeout=7 application_name=a " +
			"sslsni=0 binary_parameters=yes target_session_attrs=read-write search_path=s options='-c x=y' " +
			"hostaddr=127.0.0.1,127.0.0.2 load_balance_hosts=random krbsrvname=k",
			map[string]string{"host": "h1,h2", "port": "5433,5434", "dbname": "d", "user": "u", "password": "p w",
				"connect_timeout": "7", "application_name": "a", "search_path": "s", "options": "-c x=y",
				"hostaddr": "127.0.0.1,127.0.0.2", "krbsrvname": "k"}},
		{"postgres://u:p%27w@h1,h2:5433/d?sslmode=require&application_name=x%20y&connect_timeout=3",
			map[string]string{"host": "h1,h2", "user": "u", "password": "p'w", "dbname": "d", "application_name": "x y", "connect_timeout": "3"}},
		{"host=/var/run/postgresql dbname=d", map[string]string{"host": "/var/run/postgresql", "dbname": "d"}},
	} {
		dsn, want := tc.dsn, tc.want
		cfg := defaultConfig()
		info, err := parseDSN(dsn, &cfg)
		if err != nil {
			t.Fatalf("parseDSN(%q): %v", dsn, err)
		}
		got := map[string]string{}
		for _, p := range settings(info.pq) {
			got[p.k] = p.v
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%q: setting %s = %q; want %q", dsn, k, got[k], v)
			}
		}
	}
}
