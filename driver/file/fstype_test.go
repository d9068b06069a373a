package file

import "testing"

func TestNetworkFS(t *testing.T) {
	for _, tc := range []struct {
		magic   uint32
		name    string
		refused bool
	}{
		{0x6969, "nfs", true},
		{0xFF534D42, "cifs", true},
		{0xFE534D42, "smb2", true},
		{0x517B, "smb", true},
		{0xEF53, "", false},     // ext2/3/4
		{0x58465342, "", false}, // xfs
		{0x9123683E, "", false}, // btrfs
		{0x01021994, "", false}, // tmpfs
		{0x794C7630, "", false}, // overlayfs
		{0x65735546, "", false}, // fuse
	} {
		name, refused := networkFS(tc.magic)
		if name != tc.name || refused != tc.refused {
			t.Errorf("networkFS(%#x) = %q, %v; want %q, %v", tc.magic, name, refused, tc.name, tc.refused)
		}
	}
}
