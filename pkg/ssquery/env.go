package ssquery

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/cgroup2"
	"github.com/sstrace/sstrace/pkg/filter"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/ssfmt"
	"github.com/sstrace/sstrace/pkg/ssfmt/sysnames"
)

// netnsEnv is what ss reads from inside the namespace it lists, besides
// the sockets: the local port range, interface names and, for -s, the
// sockstat counters. All of it is per namespace, so it is read from a
// thread that has entered the namespace, and each part only when a query
// needs it: `ss -s` reads the counters and nothing else, `ss -tan` none of
// it (entering a namespace costs system calls, listing interfaces a
// netlink dump).
type netnsEnv struct {
	name string          // -N NAME, "" for the caller's own
	ns   netns.Namespace // the namespace name is

	portsOnce sync.Once
	ports     ssfmt.PortRange

	ifacesOnce sync.Once
	ifaces     map[uint32]string
	ifacesErr  error
}

// CheckNetNS checks that -N name is a network namespace, before anything
// is printed, and fails as ss does: "cannot open network namespace" when
// /run/netns/NAME cannot be opened, "setting the network namespace ...
// failed" when it is not a network namespace (ss learns that from setns;
// we say why). Run checks a non-empty Options.NetNS; `-N ""`, which
// Options cannot tell from no -N, is the caller's to check (ss opens
// /run/netns/ and fails).
func CheckNetNS(name string) error {
	ns := netns.ByName(name)
	if _, err := os.Stat(ns.Path); err != nil {
		return fmt.Errorf("ss: cannot open network namespace %q: %w", name, unwrapPathErr(err))
	}
	if _, err := ns.Inode(); err != nil {
		return fmt.Errorf("ss: setting the network namespace %q failed: %w", name, err)
	}
	return nil
}

// newNetnsEnv describes the namespace name ("" is the caller's own); it
// reads nothing yet.
func newNetnsEnv(name string) *netnsEnv {
	e := &netnsEnv{name: name}
	if name != "" {
		e.ns = netns.ByName(name)
	}
	return e
}

// sockstat reads the -s counters: /proc/net/sockstat, sockstat6 and snmp.
// Read them before anything opens a socket in the namespace (the interface
// listing does): a closed socket leaves "sockets: used" only after an RCU
// grace period.
func (e *netnsEnv) sockstat() (ssfmt.SockStat, error) {
	var st ssfmt.SockStat
	err := e.ns.Do(func() error {
		// thread-self: /proc/self/net is the main thread's namespace.
		for _, f := range []string{"sockstat", "sockstat6"} {
			b, err := readProcFile("/proc/thread-self/net/" + f)
			if err != nil {
				if f == "sockstat6" {
					continue // no IPv6: ss goes on without it
				}
				return fmt.Errorf("summary: %w", err)
			}
			if err := st.ParseSockstat(bytes.NewReader(b)); err != nil {
				return fmt.Errorf("summary: %w", err)
			}
		}
		if b, err := readProcFile("/proc/thread-self/net/snmp"); err == nil {
			_ = st.ParseSNMP(bytes.NewReader(b)) // ss prints 0 when it is missing
		}
		return nil
	})
	return st, err
}

// portRange is the namespace's local port range, read on first use. ss
// falls back to 1024-4999 when the range cannot be read; the zero
// PortRange means the same to ssfmt.
func (e *netnsEnv) portRange() ssfmt.PortRange {
	e.portsOnce.Do(func() {
		_ = e.ns.Do(func() error {
			// Network sysctls answer for the reading thread's namespace.
			b, err := readProcFile("/proc/sys/net/ipv4/ip_local_port_range")
			if err != nil {
				return err
			}
			if lo, hi, err := filter.ParseLocalPortRange(b); err == nil {
				e.ports = ssfmt.PortRange{Min: uint16(lo), Max: uint16(hi)}
			}
			return nil
		})
	})
	return e.ports
}

// interfaces maps the namespace's interface indexes to names, listed on
// first use.
func (e *netnsEnv) interfaces() (map[uint32]string, error) {
	e.ifacesOnce.Do(func() {
		e.ifacesErr = e.ns.Do(func() error {
			ifs, err := net.Interfaces()
			if err != nil {
				return fmt.Errorf("list interfaces: %w", err)
			}
			e.ifaces = make(map[uint32]string, len(ifs))
			for _, i := range ifs {
				e.ifaces[uint32(i.Index)] = i.Name
			}
			return nil
		})
	})
	return e.ifaces, e.ifacesErr
}

// names returns the resolver ss would use. Under -N, ss has remounted /sys
// for the namespace, which hides a cgroup2 mount below /sys, and
// bind-mounted /etc/netns/NAME/* over /etc; the resolver sees the same.
func (e *netnsEnv) names(needCgroups, resolve bool) ssfmt.Names {
	opts := sysnames.Options{Ifaces: func() map[uint32]string {
		// Without a listing, ss prints "ifN", as the resolver does
		// for an unknown index.
		m, _ := e.interfaces()
		return m
	}}
	if resolve {
		opts.LookupAddr = e.lookupAddr
	}
	if e.name != "" {
		opts.EtcOverlay = "/etc/netns/" + e.name
	}
	if needCgroups {
		// ss -N remounts /sys, hiding the cgroup2 mounted below it.
		var hidden []string
		if e.name != "" {
			hidden = []string{"/sys"}
		}
		opts.CgroupRoot, _ = cgroup2.Mount(hidden...) // "" when none: ids stay unresolved, as in ss
	}
	return sysnames.New(opts)
}

// readProcFile reads a small procfs file with plain system calls. os.File
// would first register it with the runtime's poller (procfs files are
// pollable), which means an epoll instance, an eventfd and a poller
// wake-up: a noticeable share of `ss -s`, which reads three such files.
func readProcFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 4096) // sockstat and snmp fit
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b))
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// lookupAddr is -r's system resolver for what the hosts file does not
// list: a reverse (PTR) query as gethostbyaddr sends it, from inside the
// namespace (ss has entered it), to the nameservers of the namespace's
// resolv.conf (/etc/netns/NAME/resolv.conf when there is one: ss -N
// bind-mounts it over /etc/resolv.conf). Go's resolver does the query; its
// sockets are opened on a thread in the namespace.
func (e *netnsEnv) lookupAddr(a netip.Addr) (string, bool) {
	servers := nameservers("/etc/resolv.conf")
	if e.name != "" {
		if s := nameservers("/etc/netns/" + e.name + "/resolv.conf"); s != nil {
			servers = s
		}
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		if len(servers) > 0 {
			_, port, _ := net.SplitHostPort(address)
			address = net.JoinHostPort(servers[0], port)
		}
		var c net.Conn
		err := e.ns.Do(func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, address)
			return err
		})
		return c, err
	}}
	// glibc's default: 5 s per try, 2 tries.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names, err := r.LookupAddr(ctx, a.String())
	if err != nil || len(names) == 0 {
		return "", false
	}
	return strings.TrimSuffix(names[0], "."), true
}

// nameservers lists the nameserver addresses of a resolv.conf; nil when it
// cannot be read or names none.
func nameservers(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "nameserver" {
			out = append(out, f[1])
		}
	}
	return out
}
