package filter

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sstrace/sstrace/pkg/cgroup2"
	"golang.org/x/sys/unix"
)

// setDefaults fills the nil hooks with the real system's resolvers.
func (o *ParseOptions) setDefaults() {
	if o.DefaultStates == 0 {
		o.DefaultStates = ConnStates
	}
	if o.LookupHost == nil {
		o.LookupHost = systemLookupHost
	}
	if o.LookupPort == nil {
		o.LookupPort = func(s string) (int, error) { return LookupService("/etc/services", s) }
	}
	if o.LookupIface == nil {
		o.LookupIface = systemLookupIface
	}
	if o.LookupCgroup == nil {
		o.LookupCgroup = LookupCgroupID
	}
	if o.LocalPortRange == nil {
		o.LocalPortRange = func() (int, int, error) {
			return ReadLocalPortRange("/proc/sys/net/ipv4/ip_local_port_range")
		}
	}
}

func systemLookupHost(name string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return nil, err
	}
	for i, a := range addrs {
		// gethostbyname2(AF_INET) hands back plain IPv4 addresses.
		if a.Is4In6() {
			addrs[i] = a.Unmap()
		}
	}
	return addrs, nil
}

func systemLookupIface(name string) (uint32, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return uint32(ifi.Index), nil
}

// LookupService finds a service name (or alias) in a services(5) file for
// tcp and udp. ss asks getservbyname for each protocol it lists and calls a
// name whose tcp and udp ports differ ambiguous; without knowing the
// protocols we check both.
func LookupService(path, name string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("look up service %q: %w", name, err)
	}
	defer f.Close()
	ports := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		portStr, proto, ok := strings.Cut(fields[1], "/")
		if !ok || (proto != "tcp" && proto != "udp") {
			continue
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 || port > 65535 {
			continue
		}
		for _, n := range append([]string{fields[0]}, fields[2:]...) {
			if n == name {
				if _, seen := ports[proto]; !seen {
					ports[proto] = port
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("look up service %q: read %s: %w", name, path, err)
	}
	tcp, hasTCP := ports["tcp"]
	udp, hasUDP := ports["udp"]
	switch {
	case hasTCP && hasUDP && tcp != udp:
		return 0, fmt.Errorf("ambiguous port %q: tcp %d, udp %d", name, tcp, udp)
	case hasTCP:
		return tcp, nil
	case hasUDP:
		return udp, nil
	}
	return 0, fmt.Errorf("no service %q in %s", name, path)
}

// ReadLocalPortRange reads net.ipv4.ip_local_port_range ("LO\tHI").
func ReadLocalPortRange(path string) (lo, hi int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	if lo, hi, err = ParseLocalPortRange(b); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	return lo, hi, nil
}

// ParseLocalPortRange parses the contents of net.ipv4.ip_local_port_range.
func ParseLocalPortRange(b []byte) (lo, hi int, err error) {
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("expected two numbers, got %q", b)
	}
	if lo, err = strconv.Atoi(f[0]); err == nil {
		hi, err = strconv.Atoi(f[1])
	}
	if err == nil && (lo < 0 || hi > 65535 || lo > hi) {
		err = fmt.Errorf("not a port range: %q", b)
	}
	return lo, hi, err
}

// LookupCgroupID returns the id of a cgroup v2 directory as ss's
// get_cgroup2_id finds it: the path as given (relative to the working
// directory), else relative to the cgroup2 mount point. The id is the
// directory's file handle, which for cgroupfs is its 64-bit inode number.
func LookupCgroupID(path string) (uint64, error) {
	id, err := cgroup2.ID(unix.AT_FDCWD, path)
	if err == nil {
		return id, nil
	}
	rel := strings.TrimLeft(path, "/")
	if rel == "" {
		return 0, fmt.Errorf("invalid cgroup2 path %q", path)
	}
	mnt, merr := cgroup2.Mount()
	if merr != nil {
		return 0, fmt.Errorf("cgroup %q: %v; %w", path, err, merr)
	}
	fd, oerr := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if oerr != nil {
		return 0, fmt.Errorf("open cgroup2 mount %s: %w", mnt, oerr)
	}
	defer unix.Close(fd)
	id, err = cgroup2.ID(fd, rel)
	if err != nil {
		return 0, fmt.Errorf("cgroup %q under %s: %w", rel, mnt, err)
	}
	return id, nil
}
