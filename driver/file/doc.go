// Package file is a lock driver that takes flock(2) locks on files in a
// directory: exclusion between the processes of one host with no server to
// run. It registers the URL scheme "file".
//
//	import _ "github.com/mutexkit/mutexkit/driver/file"
//
//	client, err := mutex.Open("file:///var/lock/myapp") // "file:" is $TMPDIR/mutexkit-locks
//	if err != nil { ... }
//	defer client.Close()
//	err = client.NewMutex("nightly-report").TryDo(ctx, func(ctx context.Context) error { ... })
//
// NewConnector takes the same DSNs, and a plain directory path too; FromDir
// takes a path. The driver has no options.
//
// # One host only
//
// A flock excludes every process on the host that locks the same file, in
// any Client, Locker or process. It does not reach other hosts: pods or
// machines that share a directory over a network filesystem get no mutual
// exclusion. Connect and Ping therefore refuse a directory on NFS, SMB/CIFS,
// AFS, Coda, NCP or Lustre with an error matching driver.ErrUnimplemented
// (and errors.ErrUnsupported) that names the filesystem. Only Linux is
// checked: elsewhere make sure the directory is local.
//
// # Lock files
//
// Key k is locked through the file FileName(k) in the directory: a readable
// prefix of the key (only [A-Za-z0-9._-], at most 64 bytes, no leading dot)
// and the first 128 bits of SHA-256(k) in hex, ending in ".lock", such as
// "nightly-report-<32 hex digits>.lock". Whatever bytes a key holds ("../",
// "/", NUL, unicode, 4 KiB) the file stays inside the directory. Since the
// name carries the start of the key, and keys may carry customer data,
// errors name the directory and "<a key's lock file>", never the file; a
// *fs.PathError keeps its cause, so errors.Is(err, fs.ErrPermission) holds.
//
// Anyone who can write to the directory can hold, remove or replace lock
// files, so on a host shared with other users give the driver a private
// directory: the default under $TMPDIR is shared. Lock files are opened
// without following symlinks, and anything but a regular file is refused.
//
// Lock files are never removed by the driver: a holder that unlinked its
// file could let one waiter lock the old inode while another creates and
// locks a new one, and both would hold the key. A directory of many keys
// keeps one small file per key; removing files of keys no one uses is
// safe only while nothing runs, and the same goes for the ".queue"
// directories beside them (see Waiting order). A waiter that crashes
// leaves its entry and the queue's mark until the key is next used (the
// next attempt or release on it removes both), so a key never used again
// keeps them.
//
// # Crash release and loss
//
// The kernel drops a flock when the last descriptor of its open file
// description closes, so a holder that dies, even by SIGKILL, frees the key
// at once. Grants are session grants (Grant.Validity is 0): they do not
// expire and need no renewal.
//
// A grant is lost only if its lock file is removed or replaced behind the
// holder's back (a temporary-file cleaner, a person): the flock then sits on
// an inode nobody else opens, and another process may take the key the
// moment the file goes. Package mutex verifies session grants every
// heartbeat (mutex.WithHeartbeat, one second by default) with Renew, which
// checks that each key's path still names the inode this Locker locked;
// otherwise it drops the grant and reports driver.ErrNotHeld, and the lease
// ends lost. On Linux the Locker's inotify watch sees the removal or rename
// and reports it to AcquireRequest.OnLost at once, before the next
// heartbeat. Either way the loss is seen after the fact.
//
// # Fencing tokens
//
// Every grant carries a fencing token: the lock file holds the last one as
// a decimal line, and the winner of the flock reads it, writes the next and
// fsyncs it before returning. Tokens start at 1 and strictly increase per
// key, across Lockers and processes, for as long as the lock file exists;
// removing the file starts them again at 1.
//
// # Waiting order
//
// Waiters are served in arrival order, across every Locker and process
// that shares the directory. Key k has a wait queue: a directory beside its
// lock file, named like it with ".queue" for ".lock", holding one empty
// entry file per waiting owner, named by its arrival stamp (the host's
// monotonic clock at its first waiting attempt) and its Owner; names never
// carry more of the key than the lock file's does. A Lock attempt that
// finds the key held takes a place at the tail; the waiter's Locker keeps
// its entry open with an exclusive flock while it waits. While anyone
// waits, the key is kept for the live waiter at the head: every other
// attempt, TryLock included, gets driver.ErrLocked, even when the key is
// free. A release wakes the head alone.
//
// A waiter is passed over (and its entry removed by whoever meets it) when
// its flock is gone, that is when its process dies, even by SIGKILL: at
// once if the key is held or another waiter is ahead of it, but if the key
// was kept for it, at the next waiter's next poll (up to about a second,
// driver.QueueHold/3), since no release follows; or when it made no attempt
// for driver.QueueHold, as when its process is stopped, judged by its
// entry's mtime, which each attempt sets to the host's monotonic clock (so
// steps of the wall clock change nothing; every process sharing the
// directory must share that clock, with no time namespace of its own). A
// Locker also drops, after QueueHold, the place of an owner that stopped
// asking without Release. Release by a waiter that gave
// up leaves the queue, and if the key was kept for it, wakes the next
// waiter. While the queue has entries it also holds a hard link to the lock
// file, its mark, which attempts and releases see in the lock file's link
// count, read by the fstat and lstat they make anyway; the last one out
// removes the mark and the queue directory, so a key nobody waits for costs
// no system call more than before the queue. A queued waiter can be passed
// over only by attempts that had looked at the lock file before its entry
// appeared, or as dead or stopped; a holder that crashes while the head
// waits for it wakes the head too (its lock file's close). A waiter that
// could not take a place is in no order and may be passed over by anyone
// until an attempt of its own takes one: its attempt waited 100 ms for the
// queue directory's flock (or until ctx ended, with ctx's error), the mark
// could not be linked, or the disk is full. A process stopped while it
// holds a queue's flock thus stops new queueing on that key until it
// resumes or dies. On a filesystem without hard links (or whose link
// counts do not show them) waiters cannot queue: they poll, in no order,
// and each Locker finds this once.
//
// Anyone who can write to the directory can add or remove entries, as with
// lock files: that changes the order, never who holds the key, which stays
// flock's alone.
//
// # Wake-ups
//
// On Linux, each Locker keeps one inotify instance, started by its first
// grant, waiting attempt or Watch, with a watch on the directory and one on
// each of its own queue entries. A release wakes the head by opening its
// entry for writing, an IN_CLOSE_WRITE that only the head's Locker
// watches: one release wakes one queued waiter. Every Locker watching the
// directory also reads the release's close of the lock file (below), but
// wakes only its owners not queued behind others. An attempt opens
// the lock file read-only, and only the winner opens it for writing as
// well, keeping that descriptor until it releases; so a release, or the
// holder's death, is the IN_CLOSE_WRITE of that file, which wakes watchers
// not queued (and the head), while waiters' failed attempts wake no one.
// Each held key thus costs two file descriptors, and each waiting owner one
// (Go raises the soft RLIMIT_NOFILE to the hard limit). Where inotify is
// unavailable (other systems, fs.inotify.max_user_instances reached) Watch
// returns an error matching driver.ErrUnimplemented: waiters poll, in the
// same order, and losses are found by Renew alone.
//
// # Platforms
//
// The driver runs on Linux, macOS and the BSDs; elsewhere Connect returns
// an error matching driver.ErrUnimplemented. Inspect needs /proc/locks, so
// it is Linux-only too.
package file
