package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/ssfmt"
	"github.com/sstrace/sstrace/pkg/ssfmt/sysnames"
)

// netnsEnv is what ss reads from inside the namespace it lists, besides
// the sockets: the local port range, interface names and, for -s, the
// sockstat counters. All of it is per namespace, so it is read from a
// thread that has entered the namespace.
type netnsEnv struct {
	name      string
	ephemeral ssfmt.PortRange
	ifaces    map[uint32]string
	sockstat  ssfmt.SockStat
}

// loadNetnsEnv reads the namespace's environment; name "" is the caller's
// own namespace.
func loadNetnsEnv(name string) (*netnsEnv, error) {
	env := &netnsEnv{name: name}
	err := inNetns(name, func() error {
		// ss falls back to 1024-4999 when the range cannot be read; the
		// zero PortRange means the same to ssfmt.
		if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
			f := strings.Fields(string(b))
			if len(f) == 2 {
				lo, err1 := strconv.ParseUint(f[0], 10, 16)
				hi, err2 := strconv.ParseUint(f[1], 10, 16)
				if err1 == nil && err2 == nil {
					env.ephemeral = ssfmt.PortRange{Min: uint16(lo), Max: uint16(hi)}
				}
			}
		}
		// Counters first: the interface listing opens a netlink socket,
		// and a closed socket leaves "sockets: used" only after an RCU
		// grace period.
		// thread-self: /proc/self/net is the main thread's namespace.
		for _, f := range []string{"sockstat", "sockstat6"} {
			b, err := os.ReadFile("/proc/thread-self/net/" + f)
			if err != nil {
				if f == "sockstat6" {
					continue // no IPv6: ss goes on without it
				}
				return fmt.Errorf("summary: %w", err)
			}
			if err := env.sockstat.ParseSockstat(bytes.NewReader(b)); err != nil {
				return fmt.Errorf("summary: %w", err)
			}
		}
		if b, err := os.ReadFile("/proc/thread-self/net/snmp"); err == nil {
			_ = env.sockstat.ParseSNMP(bytes.NewReader(b)) // ss prints 0 when it is missing
		}
		ifs, err := net.Interfaces()
		if err != nil {
			return fmt.Errorf("list interfaces: %w", err)
		}
		env.ifaces = make(map[uint32]string, len(ifs))
		for _, i := range ifs {
			env.ifaces[uint32(i.Index)] = i.Name
		}
		return nil
	})
	return env, err
}

// names returns the resolver ss would use. Under -N, ss has remounted /sys
// for the namespace, which hides a cgroup2 mount below /sys, and
// bind-mounted /etc/netns/NAME/* over /etc; the resolver sees the same.
func (e *netnsEnv) names(needCgroups bool) ssfmt.Names {
	opts := sysnames.Options{Ifaces: e.ifaces}
	if e.name != "" {
		opts.EtcOverlay = "/etc/netns/" + e.name
	}
	if needCgroups {
		if e.name != "" {
			opts.CgroupRoot = sysnames.Cgroup2Mount("/sys")
		} else {
			opts.CgroupRoot = sysnames.Cgroup2Mount()
		}
	}
	return sysnames.New(opts)
}

// inNetns runs fn on a locked OS thread inside the named namespace
// (/run/netns/NAME), or in the caller's namespace for "". The thread is
// never unlocked, so the runtime discards it rather than reuse a thread
// left in another namespace.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if name != "" {
			fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errc <- fmt.Errorf("cannot open network namespace %q: %w", name, err)
				return
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				errc <- fmt.Errorf("enter network namespace %q: %w", name, err)
				return
			}
		}
		errc <- fn()
	}()
	return <-errc
}
