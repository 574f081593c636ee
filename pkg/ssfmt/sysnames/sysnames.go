// Package sysnames resolves the names ss prints the way ss resolves them:
// service names from /etc/services (getservbyport), protocol names from
// /etc/protocols (getprotobynumber), host names from /etc/hosts
// (gethostbyaddr's "files" source), and cgroup paths by walking the
// cgroup v2 mount. It implements ssfmt.Names.
//
// Host names come from the hosts file first and then, for an address it
// does not list, from Options.LookupAddr (the system resolver, as
// gethostbyaddr goes on to DNS). Files are read once, on first use, and a
// missing file resolves nothing.
package sysnames

import (
	"bufio"
	"github.com/sstrace/sstrace/pkg/cgroup2"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Options locate the files. Empty paths take the defaults.
type Options struct {
	Services  string // default /etc/services
	Protocols string // default /etc/protocols
	Hosts     string // default /etc/hosts
	// EtcOverlay is a directory whose files replace those of /etc, as
	// `ip netns exec NAME` and `ss -N NAME` bind-mount /etc/netns/NAME/*
	// over /etc. Empty means none.
	EtcOverlay string
	// CgroupRoot is the cgroup v2 mount to resolve cgroup ids under; empty
	// means no cgroup path resolves (ss then prints "unreachable:ID").
	CgroupRoot string
	// Ifaces lists the interfaces (index to name) for the %iface
	// suffix. It is called once, on the first Iface lookup, so that the
	// netlink dump it takes is paid only when a row is bound to a device;
	// nil resolves no interface.
	Ifaces func() map[uint32]string
	// LookupAddr is asked for a host name the hosts file does not have
	// (ss -r's gethostbyaddr goes on to the sources nsswitch.conf lists,
	// DNS); nil asks nothing. Its answers are cached per address.
	LookupAddr func(netip.Addr) (string, bool)
}

// Resolver implements ssfmt.Names. It is safe for concurrent use.
type Resolver struct {
	opts Options

	once      sync.Once
	services  map[svcKey]string
	protocols map[uint8]string
	hosts     map[netip.Addr]string

	cgOnce  sync.Once
	cgroups map[uint64]string

	ifOnce sync.Once
	ifaces map[uint32]string

	lookupMu sync.Mutex
	looked   map[netip.Addr]string // LookupAddr's answers, "" for none
}

type svcKey struct {
	port  uint16
	proto string
}

// New returns a Resolver for opts.
func New(opts Options) *Resolver {
	return &Resolver{opts: opts}
}

func (r *Resolver) path(p, def string) string {
	if p != "" {
		return p
	}
	if r.opts.EtcOverlay != "" {
		alt := filepath.Join(r.opts.EtcOverlay, filepath.Base(def))
		if _, err := os.Stat(alt); err == nil {
			return alt
		}
	}
	return def
}

func (r *Resolver) load() {
	r.once.Do(func() {
		r.services = ParseServices(readLines(r.path(r.opts.Services, "/etc/services")))
		r.protocols = ParseProtocols(readLines(r.path(r.opts.Protocols, "/etc/protocols")))
		r.hosts = ParseHosts(readLines(r.path(r.opts.Hosts, "/etc/hosts")))
	})
}

func readLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// fields splits a line of an /etc database, dropping its # comment.
func fields(line string) []string {
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	return strings.Fields(line)
}

// ParseServices reads /etc/services lines ("name port/proto aliases...")
// into a (port, proto) -> name map where the first entry wins, as
// getservbyport returns the first match.
func ParseServices(lines []string) map[svcKey]string {
	m := make(map[svcKey]string)
	for _, l := range lines {
		f := fields(l)
		if len(f) < 2 {
			continue
		}
		portStr, proto, ok := strings.Cut(f[1], "/")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			continue
		}
		k := svcKey{uint16(port), proto}
		if _, dup := m[k]; !dup {
			m[k] = f[0]
		}
	}
	return m
}

// ParseProtocols reads /etc/protocols lines ("name number aliases...").
func ParseProtocols(lines []string) map[uint8]string {
	m := make(map[uint8]string)
	for _, l := range lines {
		f := fields(l)
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 8)
		if err != nil {
			continue
		}
		if _, dup := m[uint8(n)]; !dup {
			m[uint8(n)] = f[0]
		}
	}
	return m
}

// ParseHosts reads /etc/hosts lines ("address canonical aliases...") into
// an address -> canonical name map; the first line listing an address
// wins, as it does for gethostbyaddr.
func ParseHosts(lines []string) map[netip.Addr]string {
	m := make(map[netip.Addr]string)
	for _, l := range lines {
		f := fields(l)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		a = a.WithZone("")
		if _, dup := m[a]; !dup {
			m[a] = f[1]
		}
	}
	return m
}

// Service implements ssfmt.Names.
func (r *Resolver) Service(port uint16, proto string) (string, bool) {
	r.load()
	n, ok := r.services[svcKey{port, proto}]
	return n, ok
}

// Protocol implements ssfmt.Names.
func (r *Resolver) Protocol(num uint8) (string, bool) {
	r.load()
	n, ok := r.protocols[num]
	return n, ok
}

// Host implements ssfmt.Names.
func (r *Resolver) Host(a netip.Addr) (string, bool) {
	r.load()
	if n, ok := r.hosts[a]; ok || r.opts.LookupAddr == nil {
		return n, ok
	}
	r.lookupMu.Lock()
	defer r.lookupMu.Unlock()
	n, seen := r.looked[a]
	if !seen {
		n, _ = r.opts.LookupAddr(a)
		if r.looked == nil {
			r.looked = make(map[netip.Addr]string)
		}
		r.looked[a] = n
	}
	return n, n != ""
}

// Iface implements ssfmt.Names.
func (r *Resolver) Iface(index uint32) (string, bool) {
	r.ifOnce.Do(func() {
		if r.opts.Ifaces != nil {
			r.ifaces = r.opts.Ifaces()
		}
	})
	n, ok := r.ifaces[index]
	return n, ok
}

// Cgroup implements ssfmt.Names: the path of the cgroup with this id
// relative to the cgroup v2 mount, "/" for the root.
func (r *Resolver) Cgroup(id uint64) (string, bool) {
	r.cgOnce.Do(func() {
		if r.opts.CgroupRoot != "" {
			r.cgroups = WalkCgroups(r.opts.CgroupRoot)
		}
	})
	p, ok := r.cgroups[id]
	return p, ok
}

// WalkCgroups maps the id of every cgroup under root (a cgroup v2 mount)
// to its path relative to root. Unreadable parts are skipped.
func WalkCgroups(root string) map[uint64]string {
	m := make(map[uint64]string)
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		id, err := cgroup2.ID(unix.AT_FDCWD, p)
		if err != nil {
			return nil
		}
		rel := strings.TrimPrefix(p, strings.TrimSuffix(root, "/"))
		if rel == "" {
			rel = "/"
		}
		if _, dup := m[id]; !dup {
			m[id] = rel
		}
		return nil
	})
	return m
}

// ProcessName implements ssfmt.ProcessNames: the comm of process pid as
// ss reads it from /proc/PID/stat (up to the first ')').
func (r *Resolver) ProcessName(pid int32) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		return "", false
	}
	_, rest, ok := strings.Cut(string(b), " (")
	if !ok {
		return "", false
	}
	comm, _, _ := strings.Cut(rest, ")")
	if comm == "" {
		return "", false
	}
	return comm, true
}
