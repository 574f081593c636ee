package sockdiag

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/testutil"
	"golang.org/x/sys/unix"
)

// TestUnixVFS checks the bound file of a path-bound UNIX socket against
// stat(2) of that path: same inode, same device (the kernel sends its own
// dev_t encoding, stat the userspace one).
func TestUnixVFS(t *testing.T) {
	testutil.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "vfs.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	var got *sock.UnixVFS
	err = Dump(context.Background(), netns.Namespace{}, Request{Protos: []sock.Proto{sock.ProtoUNIX}, States: sock.AllStates},
		func(s *sock.Socket) error {
			if s.Unix != nil && s.Unix.Path == path {
				v := *s.Unix.VFS
				got = &v
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if got == nil {
		t.Fatalf("socket bound to %s not dumped with its file", path)
	}
	kmajor, kminor := got.Dev>>20, got.Dev&0xfffff // include/linux/kdev_t.h
	if uint64(got.Inode) != st.Ino || kmajor != unix.Major(st.Dev) || kminor != unix.Minor(st.Dev) {
		t.Errorf("vfs ino %d dev %d:%d, stat says ino %d dev %d:%d", got.Inode, kmajor, kminor, st.Ino, unix.Major(st.Dev), unix.Minor(st.Dev))
	}
}
