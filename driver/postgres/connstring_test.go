package postgres

import (
	"reflect"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/lib/pq"
)

// The LISTEN connection's string says everything the sessions' config
// does: every setting lib/pq reads from a connection string has a type
// settings can write, and a config with many set reads back the same.
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
	for _, dsn := range []string{
		"host=h1,h2 port=5433,5434 dbname=d user=u password='p w' sslmode=disable connect_timeout=7 application_name=a " +
			"sslsni=0 binary_parameters=yes target_session_attrs=read-write search_path=s options='-c x=y' " +
			"hostaddr=127.0.0.1,127.0.0.2 load_balance_hosts=random krbsrvname=k",
		"postgres://u:p%27w@h1,h2:5433/d?sslmode=require&application_name=x%20y&connect_timeout=3",
		"host=/var/run/postgresql dbname=d",
	} {
		cfg := defaultConfig()
		info, err := parseDSN(dsn, &cfg)
		if err != nil {
			t.Fatalf("parseDSN(%q): %v", dsn, err)
		}
		back, err := pq.NewConfig(connString(info.pq))
		if err != nil {
			t.Fatalf("pq.NewConfig(connString(%q)): %v", dsn, err)
		}
		if got, want := settings(back), settings(info.pq); !slices.Equal(got, want) {
			t.Errorf("%q: settings %q, read back as %q", dsn, want, got)
		}
	}
}

// FuzzConnString: the string the LISTEN connection is opened with
// (connString) gives lib/pq back every setting it was written from,
// whatever the values hold.
func FuzzConnString(f *testing.F) {
	f.Add("app", `a 'quoted' \ value`, "search_path", "x y")
	f.Add("", "\t\n", "work_mem", "")
	f.Add("db=x", "pass word='", "k", `\`)
	f.Fuzz(func(t *testing.T, db, password, param, value string) {
		param = "x_" + param // not one of lib/pq's keywords
		if !isKeyword(param) || !utf8.ValidString(db) || !utf8.ValidString(password) || !utf8.ValidString(value) {
			return // lib/pq reads the string as runes
		}
		pc, err := pq.NewConfig("dbname=x")
		if err != nil {
			t.Fatal(err)
		}
		pc.Database, pc.Password = db, password
		pc.Runtime = map[string]string{param: value}
		back, err := pq.NewConfig(connString(pc))
		if err != nil {
			t.Fatalf("pq.NewConfig(connString(...)): %v", err)
		}
		if got, want := settings(back), settings(pc); !slices.Equal(got, want) {
			t.Fatalf("settings written %q, read back %q", want, got)
		}
	})
}
