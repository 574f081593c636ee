package main

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// ss's socket tables ("dbs", misc/ss.c). sstrace dumps tcp, udp, raw and
// the three unix ones; the others exist here so that the default state set
// and the Netid column come out exactly as ss computes them.
const (
	dbTCP = iota
	dbMPTCP
	dbDCCP
	dbUDP
	dbRAW
	dbUnixDgram
	dbUnixStream
	dbUnixSeq
	dbPacketDgram
	dbPacketRaw
	dbNetlink
	dbSCTP
	dbVsockStream
	dbVsockDgram
	dbTIPC
	dbXDP
	dbMax
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

const (
	unixDBs   = 1<<dbUnixDgram | 1<<dbUnixStream | 1<<dbUnixSeq
	packetDBs = 1<<dbPacketDgram | 1<<dbPacketRaw
	vsockDBs  = 1<<dbVsockStream | 1<<dbVsockDgram
	inetDBs   = 1<<dbTCP | 1<<dbMPTCP | 1<<dbUDP | 1<<dbDCCP | 1<<dbSCTP | 1<<dbRAW
	// supportedDBs are the tables sstrace can dump.
	supportedDBs = 1<<dbTCP | 1<<dbUDP | 1<<dbRAW | unixDBs
)

// ssAllStates is ss's SS_ALL: bits 0-11 (bit 0 being its UNKNOWN).
const ssAllStates = sock.StateSet(1<<(sock.Closing+1) - 1)

// ssConnStates is ss's SS_CONN.
const ssConnStates = ssAllStates &^ (1<<sock.Listen | 1<<sock.Close | 1<<sock.TimeWait | 1<<sock.SynRecv)

func famMask(af int) uint64 { return 1 << uint(af) }

var inetFams = famMask(afInet) | famMask(afInet6)

type dbDefault struct {
	states   sock.StateSet
	families uint64
}

var dbDefaults = [dbMax]dbDefault{
	dbTCP:         {ssConnStates, inetFams},
	dbMPTCP:       {ssConnStates, inetFams},
	dbDCCP:        {ssConnStates, inetFams},
	dbUDP:         {1 << sock.Established, inetFams},
	dbRAW:         {1 << sock.Established, inetFams},
	dbUnixDgram:   {1 << sock.Close, famMask(afUnix)},
	dbUnixStream:  {ssConnStates, famMask(afUnix)},
	dbUnixSeq:     {ssConnStates, famMask(afUnix)},
	dbPacketDgram: {1 << sock.Close, famMask(afPacket)},
	dbPacketRaw:   {1 << sock.Close, famMask(afPacket)},
	dbNetlink:     {1 << sock.Close, famMask(afNetlink)},
	dbSCTP:        {ssConnStates, inetFams},
	dbVsockStream: {ssConnStates, famMask(afVsock)},
	dbVsockDgram:  {ssConnStates, famMask(afVsock)},
	dbTIPC:        {1<<sock.Established | 1<<sock.Listen | 1<<sock.Close, famMask(afTIPC)},
	dbXDP:         {1 << sock.Close, famMask(afXDP)},
}

type afDefault struct {
	dbs    uint32
	states sock.StateSet
}

var afDefaults = map[int]afDefault{
	afInet:    {inetDBs | 1<<dbRAW, ssConnStates},
	afInet6:   {inetDBs | 1<<dbRAW, ssConnStates},
	afUnix:    {unixDBs, ssConnStates},
	afPacket:  {packetDBs, 1 << sock.Close},
	afNetlink: {1 << dbNetlink, 1 << sock.Close},
	afVsock:   {vsockDBs, ssConnStates},
	afTIPC:    {1 << dbTIPC, 1<<sock.Established | 1<<sock.Listen | 1<<sock.Close},
	afXDP:     {1 << dbXDP, 1 << sock.Close},
}

// dbNames are ss's -A table names and what they select.
var dbNames = map[string][]int{
	"all": {dbUDP, dbDCCP, dbTCP, dbMPTCP, dbRAW, dbUnixStream, dbUnixDgram, dbUnixSeq,
		dbPacketRaw, dbPacketDgram, dbNetlink, dbSCTP, dbVsockStream, dbVsockDgram, dbXDP},
	"inet":           {dbUDP, dbDCCP, dbTCP, dbMPTCP, dbSCTP, dbRAW},
	"udp":            {dbUDP},
	"dccp":           {dbDCCP},
	"tcp":            {dbTCP},
	"mptcp":          {dbMPTCP},
	"sctp":           {dbSCTP},
	"raw":            {dbRAW},
	"unix":           {dbUnixStream, dbUnixDgram, dbUnixSeq},
	"unix_stream":    {dbUnixStream},
	"u_str":          {dbUnixStream},
	"unix_dgram":     {dbUnixDgram},
	"u_dgr":          {dbUnixDgram},
	"unix_seqpacket": {dbUnixSeq},
	"u_seq":          {dbUnixSeq},
	"packet":         {dbPacketRaw, dbPacketDgram},
	"packet_raw":     {dbPacketRaw},
	"p_raw":          {dbPacketRaw},
	"packet_dgram":   {dbPacketDgram},
	"p_dgr":          {dbPacketDgram},
	"netlink":        {dbNetlink},
	"tipc":           {dbTIPC},
	"vsock":          {dbVsockStream, dbVsockDgram},
	"vsock_stream":   {dbVsockStream},
	"v_str":          {dbVsockStream},
	"vsock_dgram":    {dbVsockDgram},
	"v_dgr":          {dbVsockDgram},
	"xdp":            {dbXDP},
}

var familyNames = map[string]int{
	"inet": afInet, "inet6": afInet6, "link": afPacket, "unix": afUnix,
	"netlink": afNetlink, "tipc": afTIPC, "vsock": afVsock, "xdp": afXDP,
}

// selection is what ss's options select: socket tables, families and
// states. Options apply to it in command-line order, because ss's do
// (a later -A resets tables chosen before it, the last of -a/-l wins).
type selection struct {
	dbs         uint32
	families    uint64
	states      sock.StateSet // ss's f->states: the tables' default states
	stateFilter sock.StateSet // ss's state_filter: -a, -l, -A, state words
	doDefault   bool          // no table or family chosen
	sawQuery    bool
	preferred   int // ss's preferred_family
	// unsupported lists tables the user named that sstrace cannot dump,
	// refused with an error rather than shown as empty.
	unsupported []string
}

func newSelection() *selection { return &selection{doDefault: true} }

func (s *selection) setDB(db int) {
	s.states |= dbDefaults[db].states
	s.dbs |= 1 << db
	s.doDefault = false
}

func (s *selection) setAF(af int) {
	s.states |= afDefaults[af].states
	s.families |= famMask(af)
	s.doDefault = false
	s.preferred = af
}

// ask records that the user named a table sstrace cannot dump.
func (s *selection) ask(name string) { s.unsupported = append(s.unsupported, name) }

func (s *selection) setFamily(name string) error {
	af, ok := familyNames[name]
	if !ok {
		return fmt.Errorf("%q is invalid family", name)
	}
	if afDefaults[af].dbs&supportedDBs == 0 {
		s.ask(name)
	}
	s.setAF(af)
	return nil
}

func (s *selection) setQuery(list string) error {
	if !s.sawQuery {
		s.dbs = 0
		if s.stateFilter == 0 {
			s.stateFilter = ssConnStates
		}
		s.sawQuery = true
		s.doDefault = false
	}
	for _, name := range strings.Split(list, ",") {
		enable := true
		if strings.HasPrefix(name, "!") {
			enable, name = false, name[1:]
		}
		dbs, ok := dbNames[name]
		if !ok {
			return fmt.Errorf("%q is illegal socket table id", name)
		}
		for _, db := range dbs {
			if enable {
				s.setDB(db)
				// Groups ("all", "inet") quietly skip what sstrace
				// cannot dump; a table named alone is refused.
				if len(dbs) == 1 && supportedDBs&(1<<db) == 0 {
					s.ask(name)
				}
			} else {
				s.dbs &^= 1 << db
				s.doDefault = false
			}
		}
		if enable && (name == "packet" || name == "vsock") {
			s.ask(name)
		}
	}
	return nil
}

// finish applies ss's defaults once options and state words are known
// (stateFilter then holds the state words' result, if any).
func (s *selection) finish() {
	if s.doDefault {
		if s.stateFilter == 0 {
			s.stateFilter = ssConnStates
		}
		for _, db := range dbNames["all"] {
			s.setDB(db)
		}
	}
	if s.stateFilter != 0 {
		s.states = s.stateFilter
	}
	for db := 0; db < dbMax; db++ {
		if s.dbs&(1<<db) != 0 && dbDefaults[db].families&s.families == 0 {
			s.families |= dbDefaults[db].families
		}
	}
	for af, d := range afDefaults {
		if s.families&famMask(af) != 0 && d.dbs&s.dbs == 0 {
			s.dbs |= d.dbs
		}
	}
}

// showNetid is ss's rule: the Netid column appears when more than one
// socket table is queried.
func (s *selection) showNetid() bool { return s.dbs&(s.dbs-1) != 0 }

// showState is ss's rule: the State column disappears when exactly one
// state is queried. NEW_SYN_RECV rides along with SYN-RECV and bit 0 is
// ss's UNKNOWN; neither counts.
func showState(states sock.StateSet) bool {
	v := states.Without(sock.NewSynRecv) &^ 1
	return v&(v-1) != 0
}

// hasFamily reports whether rows of family af are shown.
func (s *selection) hasFamily(af int) bool { return s.families&famMask(af) != 0 }

// inetFamilies is the order ss dumps inet families in: IPv4 first unless
// IPv6 is the preferred family, IPv6 only unless IPv4 is.
func (s *selection) inetFamilies() []uint8 {
	var fams []uint8
	if s.preferred != afInet6 && s.hasFamily(afInet) {
		fams = append(fams, afInet)
	}
	if s.preferred != afInet && s.hasFamily(afInet6) {
		fams = append(fams, afInet6)
	}
	return fams
}
