package cgroup2

import (
	"bufio"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFindMount(t *testing.T) {
	table := `tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0
cgroup2 /tmp/ns/sys/fs/cgroup cgroup2 rw 0 0
cgroup2 /sys/fs/cgroup/uni\040fied cgroup2 rw 0 0
`
	for _, c := range []struct {
		hidden []string
		want   string
		err    error
	}{
		{nil, "/tmp/ns/sys/fs/cgroup", nil},
		{[]string{"/tmp/ns/"}, "/sys/fs/cgroup/uni fied", nil},
		{[]string{"/tmp/ns", "/sys"}, "", ErrNotMounted},
	} {
		got, err := findMount(bufio.NewScanner(strings.NewReader(table)), c.hidden)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("hidden %v: %q, %v; want %q, %v", c.hidden, got, err, c.want, c.err)
		}
	}
	if got := unescape(`a\134b\011c\0`); got != "a\\b\tc\\0" {
		t.Errorf("unescape: %q", got)
	}
}

// TestMountIsADirectory checks the live answer against the filesystem.
func TestMountIsADirectory(t *testing.T) {
	mnt, err := Mount()
	if errors.Is(err, ErrNotMounted) {
		t.Skip("no cgroup v2 here")
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mnt + "/cgroup.controllers"); err != nil {
		t.Errorf("%s is not a cgroup v2 root: %v", mnt, err)
	}
	// The root cgroup's id is 1 on every kernel with cgroup ids.
	if id, err := ID(unix.AT_FDCWD, mnt); err != nil || id != 1 {
		t.Errorf("ID(%s) = %d, %v; want 1", mnt, id, err)
	}
}
