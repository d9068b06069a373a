package file_test

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutexkit/mutexkit/driver/file"
)

func TestFileName(t *testing.T) {
	hash := func(key string) string {
		sum := sha256.Sum256([]byte(key))
		return hex.EncodeToString(sum[:16])
	}
	long := strings.Repeat("a", 4096)
	for _, tc := range []struct{ key, prefix string }{
		{"nightly-report", "nightly-report"},
		{"orders.v2_batch", "orders.v2_batch"},
		{"", ""},
		{"../../etc/passwd", "etc_passwd"},
		{"/abs/path", "abs_path"},
		{"..", ""},
		{".hidden", "hidden"},
		{"-rf", "rf"},
		{"a/b", "a_b"},
		{"a\x00b", "a_b"},
		{"a//\x00\x00b", "a_b"},
		{"ключ", ""},
		{"job:ключ:7", "job_7"},
		{"trailing/", "trailing_"},
		{long, strings.Repeat("a", 64)},
		{"x" + strings.Repeat("/", 100) + "y", "x_y"},
	} {
		want := tc.prefix + "-" + hash(tc.key) + ".lock"
		if tc.prefix == "" {
			want = hash(tc.key) + ".lock"
		}
		if got := file.FileName(tc.key); got != want {
			t.Errorf("FileName(%q) = %q, want %q", tc.key, got, want)
		}
	}
	if file.FileName("a/b") == file.FileName("a_b") {
		t.Error("keys with the same prefix share a file name")
	}
	if file.FileName("A") == file.FileName("a") {
		t.Error("keys differing in case share a file name")
	}
}

func checkFileName(t *testing.T, key string) {
	name := file.FileName(key)
	if name != file.FileName(key) {
		t.Fatalf("FileName(%q) is not deterministic", key)
	}
	if len(name) > 102 {
		t.Fatalf("FileName(%q) = %q: %d bytes", key, name, len(name))
	}
	if !strings.HasSuffix(name, ".lock") || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "-") {
		t.Fatalf("FileName(%q) = %q: bad shape", key, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			t.Fatalf("FileName(%q) = %q: byte %q", key, name, c)
		}
	}
	sum := sha256.Sum256([]byte(key))
	if !strings.HasSuffix(name, hex.EncodeToString(sum[:16])+".lock") {
		t.Fatalf("FileName(%q) = %q: does not end in the key's hash", key, name)
	}
	const dir = "/var/lock/mutexkit"
	if p := filepath.Join(dir, name); filepath.Dir(p) != dir || filepath.Base(p) != name {
		t.Fatalf("FileName(%q) = %q escapes %s", key, name, dir)
	}
}

func FuzzFileName(f *testing.F) {
	for _, seed := range []string{
		"", "a", "nightly-report", "..", "../", "../../x", "/", "/etc/passwd", ".", "...", "-",
		"a\x00b", "\x00", "ключ", "日本語/../x", "\xff\xfe", strings.Repeat("../", 1365),
		strings.Repeat("é", 2048), strings.Repeat(".", 4096), "a b\tc\nd", "x:y\\z",
	} {
		f.Add(seed)
	}
	f.Fuzz(checkFileName)
}
