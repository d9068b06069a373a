package file

// networkFS reports whether magic, a statfs(2) f_type, is a network
// filesystem where flock(2) does not, or not reliably, exclude processes on
// other hosts, and names it. Such a directory is refused: the driver
// promises exclusion on one host, and a shared directory invites use from
// several.
func networkFS(magic uint32) (name string, refused bool) {
	switch magic {
	case 0x6969:
		return "nfs", true
	case 0x517B:
		return "smb", true
	case 0xFF534D42:
		return "cifs", true
	case 0xFE534D42:
		return "smb2", true
	case 0x5346414F:
		return "afs", true
	case 0x6B414653:
		return "kafs", true
	case 0x73757245:
		return "coda", true
	case 0x564C:
		return "ncp", true
	case 0x0BD00BD0:
		return "lustre", true
	}
	return "", false
}
