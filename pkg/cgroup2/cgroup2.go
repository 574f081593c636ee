// Package cgroup2 finds the cgroup v2 hierarchy: where the tracer attaches
// its cookie makers, where `cgroup = PATH` filters resolve paths, where ss -e
// turns cgroup ids back into paths. Hosts mount it in different places
// (/sys/fs/cgroup on unified systems, /sys/fs/cgroup/unified on hybrid ones),
// so it is read from the mount table, never assumed.
package cgroup2

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotMounted is returned when no cgroup v2 hierarchy is mounted.
var ErrNotMounted = errors.New("no cgroup v2 hierarchy is mounted")

// Mount returns the first cgroup v2 mount point in /proc/self/mounts,
// skipping those at or below any of the hidden prefixes (ss -N remounts
// /sys, which hides what was mounted below it).
func Mount(hidden ...string) (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", err
	}
	defer f.Close()
	return findMount(bufio.NewScanner(f), hidden)
}

func findMount(sc *bufio.Scanner, hidden []string) (string, error) {
	for sc.Scan() {
		// mounts: source mountpoint fstype options dump pass
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[2] != "cgroup2" {
			continue
		}
		mnt := unescape(f[1])
		if !under(mnt, hidden) {
			return mnt, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", ErrNotMounted
}

func under(mnt string, prefixes []string) bool {
	for _, p := range prefixes {
		if mnt == p || strings.HasPrefix(mnt, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

// unescape undoes the octal escapes of /proc/self/mounts (\040 for a
// space, \011 tab, \012 newline, \134 backslash).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// ID returns the id of the cgroup directory at path (relative to dirfd,
// or absolute; unix.AT_FDCWD for the working directory): its kernfs file
// handle, the number the kernel reports as a socket's or a task's cgroup id.
func ID(dirfd int, path string) (uint64, error) {
	h, _, err := unix.NameToHandleAt(dirfd, path, 0)
	if err != nil {
		return 0, err
	}
	b := h.Bytes()
	if len(b) != 8 {
		return 0, fmt.Errorf("%s: a file handle of %d bytes is not a cgroup id", path, len(b))
	}
	return binary.NativeEndian.Uint64(b), nil
}
