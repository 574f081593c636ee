package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netnsPath is where `ip netns add NAME` bind-mounts a namespace.
func netnsPath(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return "", fmt.Errorf("invalid netns name %q", name)
	}
	p := filepath.Join("/run/netns", name)
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return "", fmt.Errorf("netns %q does not exist (create it first: ip netns add %s)", name, name)
		}
		return "", fmt.Errorf("netns %q: %w", name, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return "", fmt.Errorf("netns %q: %s is not a namespace file (is it mounted? try ip netns add %s)", name, p, name)
	}
	return p, nil
}

// nsThread is one OS thread that lives inside the target namespace for the
// whole run. Whatever needs the namespace runs on it: sysctl writes (the
// /proc/sys/net files follow the writing thread's namespace), opening the
// sock_diag socket, and starting the workers, which inherit the namespace
// of the thread that forks them. Because the thread never leaves, a
// worker's parent-death signal (tied to the forking thread) cannot fire
// early.
type nsThread struct {
	work chan func()
}

// enterNS starts the thread and switches it into the namespace at path.
func enterNS(path string) (*nsThread, error) {
	t := &nsThread{work: make(chan func())}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: if this goroutine ever ends, the runtime
		// destroys the thread instead of reusing one in a foreign netns.
		runtime.LockOSThread()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			started <- fmt.Errorf("open %s: %w", path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			started <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		started <- nil
		for f := range t.work {
			f()
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return t, nil
}

// do runs fn on the namespace thread and waits for it.
func (t *nsThread) do(fn func() error) error {
	done := make(chan error, 1)
	t.work <- func() { done <- fn() }
	return <-done
}

// configureNS brings loopback up (`ip netns add` leaves it down) and sets
// the per-namespace sysctls a large loopback population needs. It must run
// on the namespace thread.
func configureNS(o options, m mix) error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	// Clients bind explicit addresses, so the farm itself never needs the
	// ephemeral range; widening it keeps anything else run in the netns
	// (a test client, ss's own probes) from running short.
	if err := writeSysctl("net/ipv4/ip_local_port_range", "1024 65535"); err != nil {
		return err
	}
	// The default cap on TIME-WAIT entries is half the established hash
	// size; past it the kernel silently drops new ones.
	cur, err := readSysctlInt("net/ipv4/tcp_max_tw_buckets")
	if err != nil {
		return err
	}
	if want := 2*m.TimeWait + 4096; cur < want {
		if err := writeSysctl("net/ipv4/tcp_max_tw_buckets", strconv.Itoa(want)); err != nil {
			return err
		}
	}
	return writeSysctl("net/ipv4/tcp_fin_timeout", strconv.Itoa(o.FinTimeout))
}

func writeSysctl(name, value string) error {
	p := "/proc/sys/" + name
	if err := os.WriteFile(p, []byte(value+"\n"), 0); err != nil {
		return fmt.Errorf("set %s = %s: %w", strings.ReplaceAll(name, "/", "."), value, err)
	}
	return nil
}

func readSysctlInt(name string) (int, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", strings.ReplaceAll(name, "/", "."), err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", strings.ReplaceAll(name, "/", "."), err)
	}
	return n, nil
}

// sameNetns reports whether this process is in the namespace at path, by
// comparing the namespace files' device and inode.
func sameNetns(path string) (bool, error) {
	var self, want unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return false, fmt.Errorf("stat own netns: %w", err)
	}
	if err := unix.Stat(path, &want); err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return self.Dev == want.Dev && self.Ino == want.Ino, nil
}
