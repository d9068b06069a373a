package redlock

import (
	"testing"
	"time"

	"github.com/mutexkit/mutexkit/driver"
)

// TestRecord: the holder record reads back whatever the host holds, and
// its owner is the fixed-width prefix the scripts compare.
func TestRecord(t *testing.T) {
	owner := driver.NewOwner()
	since := time.UnixMilli(1764000000123)
	for _, host := range []string{"pod-a", "", "host with spaces", "ключ 🔒", " lead and trail "} {
		rec := record(owner, 7, driver.Holder{Host: host, PID: 4242, Since: since})
		if rec[:ownerLen] != owner.String() {
			t.Errorf("record %q does not start with the owner %s", rec, owner)
		}
		got, h := parseRecord(rec)
		want := driver.Holder{Host: host, PID: 4242, Since: since}
		if got != owner.String() || h.Host != want.Host || h.PID != want.PID || !h.Since.Equal(want.Since) || h.Token != 0 {
			t.Errorf("parseRecord(%q) = %s, %+v; want %s, %+v", rec, got, h, owner, want)
		}
	}
	// What the fenced acquire script writes: the token in place of the 0.
	rec := record(owner, 8, driver.Holder{Host: "h", PID: 1})
	if record(owner, 9, driver.Holder{Host: "h", PID: 1}) == rec {
		t.Error("two attempts with the same holder give the same record")
	}
	fenced := rec[:ownerLen+1] + "17" + rec[ownerLen+2:]
	if _, h := parseRecord(fenced); h.Token != 17 || h.Host != "h" || h.PID != 1 || !h.Since.IsZero() {
		t.Errorf("parseRecord(%q) = %+v; want token 17, host h, pid 1, no since", fenced, h)
	}
	// Another layout (an older client's bare owner) is held, holder unknown.
	if got, h := parseRecord(owner.String()); got != owner.String() || h != (driver.Holder{}) {
		t.Errorf("parseRecord(bare owner) = %s, %+v", got, h)
	}
	if got, h := parseRecord("short"); got != "short" || h != (driver.Holder{}) {
		t.Errorf("parseRecord(short) = %s, %+v", got, h)
	}
}
