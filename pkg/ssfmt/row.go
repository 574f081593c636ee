package ssfmt

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// Netid returns what ss prints in its Netid column for s.
func Netid(s *sock.Socket) string {
	switch s.Proto {
	case sock.ProtoUNIX:
		if s.Unix != nil {
			switch s.Unix.Type {
			case unix.SOCK_STREAM:
				return "u_str"
			case unix.SOCK_SEQPACKET:
				return "u_seq"
			}
		}
		return "u_dgr"
	case sock.ProtoPacket:
		if s.Packet != nil && s.Packet.Type == unix.SOCK_RAW {
			return "p_raw"
		}
		return "p_dgr"
	case sock.ProtoNetlink:
		return "nl"
	}
	return s.Proto.String()
}

func itoa(v int64) string  { return strconv.FormatInt(v, 10) }
func utoa(v uint64) string { return strconv.FormatUint(v, 10) }

// inetRow prints the address columns and the extension field of a TCP,
// UDP or RAW socket (ss's inet_show_sock).
func (t *Table) inetRow(s *sock.Socket) {
	v6only := s.V6Only != nil && *s.V6Only
	t.addrPort(s, s.Local, s.Iface, v6only)
	t.addrPort(s, s.Peer, 0, v6only)
	t.users(s)
	if s.Proto == sock.ProtoRAW && s.Cookie == 0 {
		// A RAW row read from /proc/net/raw (kernels without
		// CONFIG_INET_RAW_DIAG; sock_diag rows always carry a cookie).
		// ss's procfs path prints nothing past the users.
		return
	}
	o := &t.opts
	if o.Timers || o.Extended {
		t.out(TimerString(s.Timer))
	}
	if o.Extended {
		t.inetDetails(s)
	}
	if o.TOS {
		t.out(TOSString(s))
	}
	if o.Cgroup && s.CgroupID != nil {
		t.out(" cgroup:" + t.cgroupPath(*s.CgroupID))
	}
	if o.InetSockopt && s.Sockopt != nil {
		t.out(InetSockoptString(*s.Sockopt, o.OneLine))
	}
	if o.Memory || (o.Info && s.Proto != sock.ProtoUDP) {
		if !o.OneLine {
			t.out("\n\t")
		}
		if o.Memory && s.Mem != nil {
			t.out(SkmemString(s.Mem))
		}
		if o.Info && s.TCP != nil {
			t.out(TCPInfoString(s.TCP, s.State, o.Timers || o.Extended, o.Numeric))
		}
		if o.Info && s.MPTCPInfo != nil {
			t.out(MPTCPInfoString(s.MPTCPInfo))
		}
	}
}

// addrPort prints one "address:" and "port" field pair.
func (t *Table) addrPort(s *sock.Socket, ap netip.AddrPort, ifindex uint32, v6only bool) {
	mark := len(t.buf)
	t.buf = t.appendHost(t.buf, s.Family, ap.Addr(), v6only)
	if ifindex != 0 {
		t.buf = append(t.buf, '%')
		t.buf = t.appendIface(t.buf, ifindex)
	}
	t.buf = append(t.buf, ':')
	t.commit(mark)
	t.fieldNext()
	mark = len(t.buf)
	t.buf = t.appendService(t.buf, s, ap.Port())
	t.commit(mark)
	t.fieldNext()
}

// appendHost formats an address as ss's inet_addr_print does: the IPv6
// wildcard is "*" unless the socket is v6only, numeric IPv6 addresses are
// bracketed, and with -r a name replaces the number when one is known.
func (t *Table) appendHost(b []byte, family uint8, a netip.Addr, v6only bool) []byte {
	if family == unix.AF_INET6 || (family == 0 && a.Is6() && !a.Is4In6()) {
		if !v6only && (!a.IsValid() || a == netip.IPv6Unspecified()) {
			return append(b, '*')
		}
		// Bracket the host unless it came out without a colon (a
		// name from -r): write the bracket first and take it back.
		mark := len(b)
		b = t.appendHostNumOrName(append(b, '['), a, 16)
		if bytes.IndexByte(b[mark+1:], ':') < 0 {
			return append(b[:mark], b[mark+1:]...)
		}
		return append(b, ']')
	}
	return t.appendHostNumOrName(b, a, 4)
}

func (t *Table) appendHostNumOrName(b []byte, a netip.Addr, size int) []byte {
	if t.opts.Resolve && t.opts.Names != nil && a.IsValid() {
		// ss resolves a v4-mapped address as the IPv4 address it maps.
		if name, ok := t.opts.Names.Host(a.Unmap()); ok {
			return append(b, name...)
		}
	}
	if size == 4 {
		if !a.IsValid() {
			return append(b, "0.0.0.0"...)
		}
		return a.Unmap().AppendTo(b)
	}
	if !a.IsValid() {
		return append(b, "::"...)
	}
	return appendNtoP6(b, a.As16())
}

func (t *Table) appendIface(b []byte, index uint32) []byte {
	if t.opts.Names != nil {
		if n, ok := t.opts.Names.Iface(index); ok {
			return append(b, n...)
		}
	}
	return strconv.AppendUint(append(b, "if"...), uint64(index), 10)
}

// appendService is ss's resolve_service.
func (t *Table) appendService(b []byte, s *sock.Socket, port uint16) []byte {
	if port == 0 {
		return append(b, '*')
	}
	if t.opts.Numeric {
		return strconv.AppendUint(b, uint64(port), 10)
	}
	if s.Proto == sock.ProtoRAW {
		if t.opts.Names != nil {
			if n, ok := t.opts.Names.Protocol(uint8(port)); ok && port < 256 {
				return append(b, n...)
			}
		}
		return strconv.AppendUint(append(b, "ipproto-"...), uint64(port), 10)
	}
	if t.opts.Names != nil && !t.ephemeral(port) {
		proto := "tcp"
		if s.Proto == sock.ProtoUDP {
			proto = "udp"
		}
		if n, ok := t.opts.Names.Service(port, proto); ok {
			return append(b, n...)
		}
	}
	return strconv.AppendUint(b, uint64(port), 10)
}

func (t *Table) ephemeral(port uint16) bool {
	r := t.opts.Ephemeral
	if r.Min == 0 && r.Max == 0 {
		r = PortRange{1024, 4999}
	}
	return port >= r.Min && port <= r.Max
}

// users prints ss -p's users:(...) list. A row without an inode (a
// minisocket) has no holders to list; the sources leave its Procs empty,
// while a transition row (-E --transitions) has an owner but no inode.
func (t *Table) users(s *sock.Socket) {
	if !t.opts.Processes || len(s.Procs) == 0 {
		return
	}
	mark := len(t.buf)
	t.buf = appendUsers(t.buf, s.Procs, t.opts.Threads)
	t.commit(mark)
}

// UsersString formats processes as ss -p does: ` users:(("comm",pid=N,fd=N),...)`
// with a leading space; with threads (ss -T), ("comm",pid=N,tid=N,fd=N).
func UsersString(procs []sock.Process, threads bool) string {
	return string(appendUsers(nil, procs, threads))
}

func appendUsers(b []byte, procs []sock.Process, threads bool) []byte {
	b = append(b, " users:("...)
	for i, p := range procs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `("`...)
		b = append(b, p.Comm...)
		b = append(b, `",pid=`...)
		b = strconv.AppendInt(b, int64(p.PID), 10)
		if threads {
			b = append(b, ",tid="...)
			b = strconv.AppendInt(b, int64(p.TID), 10)
		}
		b = append(b, ",fd="...)
		b = strconv.AppendInt(b, int64(p.FD), 10)
		b = append(b, ')')
	}
	return append(b, ')')
}

var timerNames = [...]string{"off", "on", "keepalive", "timewait", "persist", "unknown"}

// TimerName is ss's name for a raw idiag_timer code.
func TimerName(kind uint8) string {
	if kind > 4 {
		kind = 5
	}
	return timerNames[kind]
}

// TimerString formats a timer as ss -o does (` timer:(keepalive,1min58sec,0)`),
// or returns "" when no timer runs.
func TimerString(tm sock.Timer) string {
	if tm.Kind == 0 {
		return ""
	}
	ms := tm.Expires.Milliseconds()
	if ms < 0 {
		ms = 0 // the kernel clamps overdue timers to 0 as well
	}
	return " timer:(" + TimerName(tm.Kind) + "," + MsTimer(uint32(ms)) + "," + itoa(int64(tm.Retrans)) + ")"
}

// MsTimer is ss's print_ms_timer: minutes, seconds and milliseconds with
// precision dropping as the value grows ("119min", "1min58sec", "42sec",
// "8.192ms" for 8 s 192 ms, "200ms").
func MsTimer(timeout uint32) string {
	secs := int(timeout / 1000)
	minutes := secs / 60
	secs %= 60
	msecs := int(timeout % 1000)
	var b strings.Builder
	if minutes != 0 {
		msecs = 0
		b.WriteString(itoa(int64(minutes)))
		b.WriteString("min")
		if minutes > 9 {
			secs = 0
		}
	}
	if secs != 0 {
		if secs > 9 {
			msecs = 0
		}
		b.WriteString(itoa(int64(secs)))
		if msecs != 0 {
			b.WriteString(".")
		} else {
			b.WriteString("sec")
		}
	}
	if msecs != 0 {
		m := itoa(int64(msecs))
		b.WriteString(strings.Repeat("0", 3-len(m)))
		b.WriteString(m)
		b.WriteString("ms")
	}
	return b.String()
}

// inetDetails prints ss -e's fields of an inet socket.
func (t *Table) inetDetails(s *sock.Socket) {
	var b strings.Builder
	if s.UID != 0 {
		b.WriteString(" uid:" + utoa(uint64(s.UID)))
	}
	b.WriteString(" ino:" + utoa(uint64(uint32(s.Inode))))
	b.WriteString(" sk:" + strconv.FormatUint(s.Cookie, 16))
	if s.Mark != nil && *s.Mark != 0 {
		b.WriteString(" fwmark:0x" + strconv.FormatUint(uint64(*s.Mark), 16))
	}
	if s.CgroupID != nil && *s.CgroupID != 0 {
		b.WriteString(" cgroup:" + t.cgroupPath(*s.CgroupID))
	}
	if s.Family == unix.AF_INET6 && s.V6Only != nil {
		if *s.V6Only {
			b.WriteString(" v6only:1")
		} else {
			b.WriteString(" v6only:0")
		}
	}
	if s.Shutdown != nil {
		b.WriteString(" " + ShutdownString(*s.Shutdown))
	}
	t.out(b.String())
}

// TOSString formats ss --tos's fields of an inet socket, each present only
// when the kernel sent it: ` tos:0x10 tclass:0 class_id:0x6` (C's %#x, so
// zero is "0").
func TOSString(s *sock.Socket) string {
	var b strings.Builder
	hex := func(name string, v uint64) {
		b.WriteString(" " + name + ":")
		if v == 0 {
			b.WriteString("0")
			return
		}
		b.WriteString("0x" + strconv.FormatUint(v, 16))
	}
	if s.TOS != nil {
		hex("tos", uint64(*s.TOS))
	}
	if s.TClass != nil {
		hex("tclass", uint64(*s.TClass))
	}
	if s.ClassID != nil {
		hex("class_id", uint64(*s.ClassID))
	}
	return b.String()
}

// inetSockoptNames are struct inet_diag_sockopt's flags in ss's order, by
// byte and bit (the kernel's bitfields, first declared lowest).
var inetSockoptNames = [...]struct {
	byte, bit uint8
	name      string
}{
	{0, 0, "recverr"}, {0, 1, "is_icsk"}, {0, 2, "freebind"}, {0, 3, "hdrincl"},
	{0, 4, "mc_loop"}, {0, 5, "transparent"}, {0, 6, "mc_all"}, {0, 7, "nodefrag"},
	{1, 0, "bind_addr_no_port"}, {1, 1, "recverr_rfc4884"}, {1, 2, "defer_connect"},
}

// InetSockoptString formats ss --inet-sockopt's list of the flags set in
// INET_DIAG_SOCKOPT, "inet-sockopt: ( mc_loop)": on a line of its own
// ("\n\t" first), or after a space under -O.
func InetSockoptString(opts [2]byte, oneLine bool) string {
	var b strings.Builder
	if oneLine {
		b.WriteString(" inet-sockopt: (")
	} else {
		b.WriteString("\n\tinet-sockopt: (")
	}
	for _, f := range inetSockoptNames {
		if opts[f.byte]&(1<<f.bit) != 0 {
			b.WriteString(" " + f.name)
		}
	}
	b.WriteString(")")
	return b.String()
}

func (t *Table) cgroupPath(id uint64) string {
	if t.opts.Names != nil {
		if p, ok := t.opts.Names.Cgroup(id); ok {
			return p
		}
	}
	return "unreachable:" + strconv.FormatUint(id, 16)
}

// ShutdownString renders a shutdown mask as ss does: "<->" when both
// directions are open, "-" replacing an arrow for each direction shut.
func ShutdownString(mask uint8) string {
	b := []byte("<->")
	if mask&1 != 0 {
		b[0] = '-'
	}
	if mask&2 != 0 {
		b[2] = '-'
	}
	return string(b)
}

// SkmemString formats socket memory as ss -m does, with a leading space.
func SkmemString(m *sock.MemInfo) string {
	var b strings.Builder
	b.WriteString(" skmem:(r")
	b.WriteString(utoa(uint64(m.RmemAlloc)))
	b.WriteString(",rb")
	b.WriteString(utoa(uint64(m.RcvBuf)))
	b.WriteString(",t")
	b.WriteString(utoa(uint64(m.WmemAlloc)))
	b.WriteString(",tb")
	b.WriteString(utoa(uint64(m.SndBuf)))
	b.WriteString(",f")
	b.WriteString(utoa(uint64(m.FwdAlloc)))
	b.WriteString(",w")
	b.WriteString(utoa(uint64(m.WmemQueued)))
	b.WriteString(",o")
	b.WriteString(utoa(uint64(m.OptMem)))
	b.WriteString(",bl")
	b.WriteString(utoa(uint64(m.Backlog)))
	b.WriteString(",d")
	b.WriteString(utoa(uint64(m.Drops)))
	b.WriteString(")")
	return b.String()
}

// unixRow prints the address columns and extension field of a UNIX socket
// (ss's unix_show_sock): the name (or "*") and the socket's inode, then "*"
// and the peer's inode.
func (t *Table) unixRow(s *sock.Socket) {
	name, peer := "*", uint64(0)
	if s.Unix != nil {
		if s.Unix.Path != "" {
			name = unixName(s.Unix.Path)
		}
		peer = s.Unix.PeerInode
	}
	t.out(name + " ")
	t.fieldNext()
	// ss keeps both inodes in C ints, so it prints them signed.
	t.out(itoa(int64(int32(uint32(s.Inode)))))
	t.fieldNext()
	t.out("* ")
	t.fieldNext()
	t.out(itoa(int64(int32(uint32(peer)))))
	t.fieldNext()
	t.users(s)
	o := &t.opts
	if o.Memory && s.Mem != nil {
		t.out(SkmemString(s.Mem))
	}
	if o.Extended {
		var b strings.Builder
		if s.Shutdown != nil {
			b.WriteString(" " + ShutdownString(*s.Shutdown))
		}
		if s.Unix != nil && s.Unix.VFS != nil {
			// ss splits the kernel's dev_t with glibc's major() and
			// minor(), which unix.Major/Minor reproduce.
			v := s.Unix.VFS
			b.WriteString(" ino:" + utoa(uint64(v.Inode)) + " dev:" + utoa(uint64(unix.Major(uint64(v.Dev)))) + "/" + utoa(uint64(unix.Minor(uint64(v.Dev)))))
		}
		// The kernel attaches the pending-connection list to every
		// listener (and only to listeners) when asked, even when empty.
		if s.State == sock.Listen {
			b.WriteString(" peers:")
			if s.Unix != nil {
				for _, p := range s.Unix.Pending {
					b.WriteString(" " + utoa(uint64(uint32(p))))
				}
			}
		}
		t.out(b.String())
	}
}

// unixName turns an abstract name's NUL bytes into '@' as ss does, in case
// the row still carries the kernel's raw bytes.
func unixName(p string) string {
	if p[0] == 0 {
		return strings.ReplaceAll(p, "\x00", "@")
	}
	return p
}
