package ssquery

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// Table is one of ss's socket tables ("dbs" in misc/ss.c). sstrace dumps
// every one: TCP, MPTCP, UDP, RAW, the three UNIX ones, the two packet ones
// and netlink with their rows; DCCP, SCTP, vsock, TIPC and XDP are asked
// for as ss asks, and answer ss's empty table where the kernel has no
// sock_diag module for them (see dump).
type Table uint8

// ss's socket tables, in its order (the order matters: it is the bit
// order of ss's masks).
const (
	TCP           Table = iota // -t
	MPTCP                      // -M
	DCCP                       // -d
	UDP                        // -u
	RAW                        // -w
	UnixDgram                  // -A unix_dgram
	UnixStream                 // -A unix_stream
	UnixSeqpacket              // -A unix_seqpacket
	PacketDgram                // -A packet_dgram
	PacketRaw                  // -A packet_raw
	Netlink                    // -A netlink
	SCTP                       // -S
	VsockStream                // -A vsock_stream
	VsockDgram                 // -A vsock_dgram
	TIPC                       // --tipc
	XDP                        // --xdp
	numTables
)

// Address families ss selects by, beyond what x/sys names.
const (
	afUnix    = unix.AF_UNIX
	afInet    = unix.AF_INET
	afInet6   = unix.AF_INET6
	afPacket  = unix.AF_PACKET
	afNetlink = unix.AF_NETLINK
	afVsock   = unix.AF_VSOCK
	afTIPC    = unix.AF_TIPC
	afXDP     = unix.AF_XDP
)

// bit is t's bit in a table mask.
func (t Table) bit() uint32 { return 1 << t }

const (
	unixTables   = 1<<UnixDgram | 1<<UnixStream | 1<<UnixSeqpacket
	packetTables = 1<<PacketDgram | 1<<PacketRaw
	vsockTables  = 1<<VsockStream | 1<<VsockDgram
	inetTables   = 1<<TCP | 1<<MPTCP | 1<<UDP | 1<<DCCP | 1<<SCTP | 1<<RAW
)

// ssAllStates is ss's SS_ALL: bits 0-11 (bit 0 being its UNKNOWN).
const ssAllStates = sock.StateSet(1<<(sock.Closing+1) - 1)

// ssConnStates is ss's SS_CONN.
const ssConnStates = ssAllStates &^ (1<<sock.Listen | 1<<sock.Close | 1<<sock.TimeWait | 1<<sock.SynRecv)

func famMask(af int) uint64 { return 1 << uint(af) }

const inetFams = 1<<afInet | 1<<afInet6

// tableDefault is what selecting a table implies, as ss's default_dbs.
type tableDefault struct {
	states   sock.StateSet
	families uint64
	name     string // ss's -A name
}

// tableDefaults is a read-only table (ss's default_dbs).
var tableDefaults = [numTables]tableDefault{
	TCP:           {ssConnStates, inetFams, "tcp"},
	MPTCP:         {ssConnStates, inetFams, "mptcp"},
	DCCP:          {ssConnStates, inetFams, "dccp"},
	UDP:           {1 << sock.Established, inetFams, "udp"},
	RAW:           {1 << sock.Established, inetFams, "raw"},
	UnixDgram:     {1 << sock.Close, famMask(afUnix), "unix_dgram"},
	UnixStream:    {ssConnStates, famMask(afUnix), "unix_stream"},
	UnixSeqpacket: {ssConnStates, famMask(afUnix), "unix_seqpacket"},
	PacketDgram:   {1 << sock.Close, famMask(afPacket), "packet_dgram"},
	PacketRaw:     {1 << sock.Close, famMask(afPacket), "packet_raw"},
	Netlink:       {1 << sock.Close, famMask(afNetlink), "netlink"},
	SCTP:          {ssConnStates, inetFams, "sctp"},
	VsockStream:   {ssConnStates, famMask(afVsock), "vsock_stream"},
	VsockDgram:    {ssConnStates, famMask(afVsock), "vsock_dgram"},
	TIPC:          {1<<sock.Established | 1<<sock.Listen | 1<<sock.Close, famMask(afTIPC), "tipc"},
	XDP:           {1 << sock.Close, famMask(afXDP), "xdp"},
}

// familyDefault is what selecting a family implies, as ss's default_afs.
type familyDefault struct {
	tables uint32
	states sock.StateSet
	name   string // the table ss's own flag for the family names
}

// familyDefaults is a read-only table (ss's default_afs).
var familyDefaults = map[int]familyDefault{
	afInet:    {inetTables | 1<<RAW, ssConnStates, "inet"},
	afInet6:   {inetTables | 1<<RAW, ssConnStates, "inet6"},
	afUnix:    {unixTables, ssConnStates, "unix"},
	afPacket:  {packetTables, 1 << sock.Close, "packet"},
	afNetlink: {1 << Netlink, 1 << sock.Close, "netlink"},
	afVsock:   {vsockTables, ssConnStates, "vsock"},
	afTIPC:    {1 << TIPC, 1<<sock.Established | 1<<sock.Listen | 1<<sock.Close, "tipc"},
	afXDP:     {1 << XDP, 1 << sock.Close, "xdp"},
}

// tableNames are ss's -A table names and what they select (read-only).
var tableNames = map[string][]Table{
	"all": {UDP, DCCP, TCP, MPTCP, RAW, UnixStream, UnixDgram, UnixSeqpacket,
		PacketRaw, PacketDgram, Netlink, SCTP, VsockStream, VsockDgram, XDP},
	"inet":           {UDP, DCCP, TCP, MPTCP, SCTP, RAW},
	"udp":            {UDP},
	"dccp":           {DCCP},
	"tcp":            {TCP},
	"mptcp":          {MPTCP},
	"sctp":           {SCTP},
	"raw":            {RAW},
	"unix":           {UnixStream, UnixDgram, UnixSeqpacket},
	"unix_stream":    {UnixStream},
	"u_str":          {UnixStream},
	"unix_dgram":     {UnixDgram},
	"u_dgr":          {UnixDgram},
	"unix_seqpacket": {UnixSeqpacket},
	"u_seq":          {UnixSeqpacket},
	"packet":         {PacketRaw, PacketDgram},
	"packet_raw":     {PacketRaw},
	"p_raw":          {PacketRaw},
	"packet_dgram":   {PacketDgram},
	"p_dgr":          {PacketDgram},
	"netlink":        {Netlink},
	"tipc":           {TIPC},
	"vsock":          {VsockStream, VsockDgram},
	"vsock_stream":   {VsockStream},
	"v_str":          {VsockStream},
	"vsock_dgram":    {VsockDgram},
	"v_dgr":          {VsockDgram},
	"xdp":            {XDP},
}

// familyByName maps ss's -f names to families.
func familyByName(name string) (int, bool) {
	switch name {
	case "inet":
		return afInet, true
	case "inet6":
		return afInet6, true
	case "link":
		return afPacket, true
	case "unix":
		return afUnix, true
	case "netlink":
		return afNetlink, true
	case "tipc":
		return afTIPC, true
	case "vsock":
		return afVsock, true
	case "xdp":
		return afXDP, true
	}
	return 0, false
}

// Selection is what ss's options select: socket tables, families and
// states. Options apply to it in command-line order, because ss's do (a
// later -A resets tables chosen before it, the last of -a/-l wins), so a
// command line's flags call its methods as they are parsed. The zero value
// is ss with no option: its default tables and states.
type Selection struct {
	tables      uint32
	families    uint64
	states      sock.StateSet // ss's f->states: the tables' default states
	stateFilter sock.StateSet // ss's state_filter: -a, -l, -A, state words
	chosen      bool          // a table or family was chosen (ss's !do_default)
	sawQuery    bool
	preferred   int // ss's preferred_family
}

// All is -a: every state.
func (s *Selection) All() { s.stateFilter = ssAllStates }

// Listening is -l: listening sockets (and CLOSE, as ss counts unbound
// UNIX and RAW sockets as listening).
func (s *Selection) Listening() { s.stateFilter = 1<<sock.Listen | 1<<sock.Close }

// Table selects one table, as -t, -u, -w, -M, -S and -d do.
func (s *Selection) Table(t Table) { s.addTable(t) }

// Family selects an address family (unix.AF_INET, AF_INET6, AF_UNIX,
// AF_PACKET, AF_NETLINK, AF_VSOCK, AF_TIPC, AF_XDP), as -4, -6, -x, -0,
// --netlink, --vsock, --tipc and --xdp do. The last family chosen is the
// preferred one: it orders inet dumps and types filter addresses.
func (s *Selection) Family(af uint8) { s.addFamily(int(af)) }

// FamilyName is -f NAME (inet, inet6, unix, link, netlink, tipc, vsock,
// xdp).
func (s *Selection) FamilyName(name string) error {
	af, ok := familyByName(name)
	if !ok {
		return fmt.Errorf("%q is invalid family", name)
	}
	s.addFamily(af)
	return nil
}

// Query is -A LIST: a comma-separated list of table names, each optionally
// negated with "!". The first -A replaces the default tables.
func (s *Selection) Query(list string) error {
	if !s.sawQuery {
		s.tables = 0
		if s.stateFilter == 0 {
			s.stateFilter = ssConnStates
		}
		s.sawQuery = true
		s.chosen = true
	}
	for _, name := range strings.Split(list, ",") {
		enable := true
		if strings.HasPrefix(name, "!") {
			enable, name = false, name[1:]
		}
		tables, ok := tableNames[name]
		if !ok {
			return fmt.Errorf("%q is illegal socket table id", name)
		}
		for _, t := range tables {
			if enable {
				s.addTable(t)
			} else {
				s.tables &^= t.bit()
				s.chosen = true
			}
		}
	}
	return nil
}

func (s *Selection) addTable(t Table) {
	s.states |= tableDefaults[t].states
	s.tables |= t.bit()
	s.chosen = true
}

func (s *Selection) addFamily(af int) {
	s.states |= familyDefaults[af].states
	s.families |= famMask(af)
	s.chosen = true
	s.preferred = af
}

// finish applies ss's defaults once the options are known.
func (s *Selection) finish() {
	if !s.chosen {
		if s.stateFilter == 0 {
			s.stateFilter = ssConnStates
		}
		for _, t := range tableNames["all"] {
			s.addTable(t)
		}
	}
	if s.stateFilter != 0 {
		s.states = s.stateFilter
	}
	for t := range numTables {
		if s.tables&t.bit() != 0 && tableDefaults[t].families&s.families == 0 {
			s.families |= tableDefaults[t].families
		}
	}
	for af, d := range familyDefaults {
		if s.families&famMask(af) != 0 && d.tables&s.tables == 0 {
			s.tables |= d.tables
		}
	}
}

// showNetid is ss's rule: the Netid column appears when more than one
// socket table is queried.
func (s *Selection) showNetid() bool { return s.tables&(s.tables-1) != 0 }

// showState is ss's rule: the State column disappears when exactly one
// state is queried. NEW_SYN_RECV rides along with SYN-RECV and bit 0 is
// ss's UNKNOWN; neither counts.
func showState(states sock.StateSet) bool {
	v := states.Without(sock.NewSynRecv) &^ 1
	return v&(v-1) != 0
}

// hasFamily reports whether rows of family af are shown.
func (s *Selection) hasFamily(af int) bool { return s.families&famMask(af) != 0 }

// hasTable reports whether table t is queried.
func (s *Selection) hasTable(t Table) bool { return s.tables&t.bit() != 0 }

// inetFamilies is the order ss dumps inet families in: IPv4 first unless
// IPv6 is the preferred family, IPv6 only unless IPv4 is.
func (s *Selection) inetFamilies() []uint8 {
	var fams []uint8
	if s.preferred != afInet6 && s.hasFamily(afInet) {
		fams = append(fams, afInet)
	}
	if s.preferred != afInet && s.hasFamily(afInet6) {
		fams = append(fams, afInet6)
	}
	return fams
}

// unixTypeSelected is ss's unix_type_skip, inverted.
func (s *Selection) unixTypeSelected(row *sock.Socket) bool {
	typ := uint8(unix.SOCK_DGRAM)
	if row.Unix != nil {
		typ = row.Unix.Type
	}
	switch typ {
	case unix.SOCK_STREAM:
		return s.hasTable(UnixStream)
	case unix.SOCK_DGRAM:
		return s.hasTable(UnixDgram)
	case unix.SOCK_SEQPACKET:
		return s.hasTable(UnixSeqpacket)
	}
	return true
}
