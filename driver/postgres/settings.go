package postgres

import (
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"time"

	"github.com/lib/pq"
)

// A parsed DSN's settings as libpq keywords and values, for the checks of
// dsn.go (swallowsKey reads every value).

type kv struct{ k, v string }

// settings lists pc's settings as libpq keywords and values: each field
// lib/pq reads from a connection string (its "postgres" struct tag), with
// several hosts, ports and addresses joined as lib/pq splits them, then the
// run-time parameters. Empty values are left out (lib/pq refuses some),
// but for the password: an empty one given in the DSN still overrides
// $PGPASSWORD. The service is left out too: its settings are in pc.
func settings(pc pq.Config) []kv {
	var out []kv
	v := reflect.ValueOf(pc)
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		k := f.Tag.Get("postgres")
		if k == "" || k == "-" || k == "service" || !f.IsExported() {
			continue
		}
		s, ok := settingString(v.Field(i))
		if !ok {
			continue // TestSettingsWritesEveryField keeps this from happening
		}
		switch k {
		case "host":
			for _, m := range pc.Multi {
				s += "," + m.Host
			}
		case "port":
			for _, m := range pc.Multi {
				s += "," + strconv.FormatUint(uint64(m.Port), 10)
			}
		case "hostaddr":
			for _, m := range pc.Multi {
				if s == "" {
					break // lib/pq takes more addresses only after a first
				}
				s += ","
				if m.Hostaddr.IsValid() {
					s += m.Hostaddr.String()
				}
			}
		}
		if s != "" || k == "password" {
			out = append(out, kv{k, s})
		}
	}
	keys := make([]string, 0, len(pc.Runtime))
	for k := range pc.Runtime {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, kv{k, pc.Runtime[k]})
	}
	return out
}

// settingString writes one field of a pq.Config as lib/pq reads it.
func settingString(v reflect.Value) (string, bool) {
	switch x := v.Interface().(type) {
	case netip.Addr:
		if !x.IsValid() {
			return "", true
		}
		return x.String(), true
	case time.Duration: // connect_timeout, in whole seconds
		if x <= 0 {
			return "", true
		}
		return strconv.FormatInt(int64((x+time.Second-1)/time.Second), 10), true
	case bool:
		return strconv.FormatBool(x), true
	}
	switch v.Kind() {
	case reflect.String:
		return v.String(), true
	case reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10), true
	}
	return "", false
}
