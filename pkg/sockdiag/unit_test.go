package sockdiag

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
)

// These tests need no privileges: they drive the decoder and the dump loop
// with hand-built kernel replies laid out as linux/inet_diag.h says.

func nlmsg(typ, flags uint16, seq uint32, payload []byte) []byte {
	l := nlmsgHdrLen + len(payload)
	b := make([]byte, nlaAlign(l))
	putNlmsghdr(b, l, typ, flags, seq)
	copy(b[nlmsgHdrLen:], payload)
	return b
}

func attr(typ uint16, v []byte) []byte {
	b := make([]byte, nlaAlign(nlaHdrLen+len(v)))
	ne.PutUint16(b, uint16(nlaHdrLen+len(v)))
	ne.PutUint16(b[2:], typ)
	copy(b[nlaHdrLen:], v)
	return b
}

// inetMsg builds an inet_diag_msg for an IPv4 socket.
func inetMsg(cookie uint64, state sock.State, local, peer netip.AddrPort, attrs ...[]byte) []byte {
	b := make([]byte, inetMsgLen)
	b[0] = unix.AF_INET
	b[1] = uint8(state)
	b[2] = 3 // timer: TIME-WAIT
	b[3] = 2
	b[4], b[5] = byte(local.Port()>>8), byte(local.Port())
	b[6], b[7] = byte(peer.Port()>>8), byte(peer.Port())
	l4, p4 := local.Addr().As4(), peer.Addr().As4()
	copy(b[8:], l4[:])
	copy(b[24:], p4[:])
	ne.PutUint32(b[40:], 7)
	ne.PutUint32(b[44:], uint32(cookie))
	ne.PutUint32(b[48:], uint32(cookie>>32))
	ne.PutUint32(b[52:], 59_500)
	ne.PutUint32(b[56:], 11)
	ne.PutUint32(b[60:], 22)
	ne.PutUint32(b[64:], 1000)
	ne.PutUint32(b[68:], 4242)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func TestDecodeInet(t *testing.T) {
	d := newDecoder(99)
	local, peer := netip.MustParseAddrPort("10.1.2.3:443"), netip.MustParseAddrPort("192.168.0.9:51000")
	cg := make([]byte, 8)
	ne.PutUint64(cg, 0xabcdef)
	mem := make([]byte, 4*9)
	for i := 0; i < 9; i++ {
		ne.PutUint32(mem[i*4:], uint32(i+1))
	}
	info := make([]byte, 8+4) // a tcp_info cut after rto: an old kernel
	info[0] = uint8(sock.Established)
	ne.PutUint32(info[8:], 204000)
	msg := inetMsg(0x1_0000_0002, sock.Established, local, peer,
		attr(inetDiagShutdown, []byte{2}),
		attr(inetDiagMark, []byte{0x10, 0, 0, 0}),
		attr(inetDiagCgroupID, cg),
		attr(inetDiagSkMeminfo, mem),
		attr(inetDiagInfo, info),
		attr(inetDiagCong, []byte("cubic\x00")),
		attr(inetDiagTOS|0x8000, []byte{0x10}), // nested flag is ignored
	)
	s, ok, err := d.decode(pass{proto: sock.ProtoTCP, family: unix.AF_INET}, msg)
	if err != nil || !ok {
		t.Fatalf("decode: %v %v", ok, err)
	}
	if s.Local != local || s.Peer != peer || s.State != sock.Established || s.Cookie != 0x1_0000_0002 ||
		s.Iface != 7 || s.RecvQ != 11 || s.SendQ != 22 || s.UID != 1000 || s.Inode != 4242 || s.NetNS != 99 {
		t.Errorf("fixed part decoded wrong: %+v", s)
	}
	if s.Timer != (sock.Timer{Kind: 3, Expires: 59500 * time.Millisecond, Retrans: 2}) {
		t.Errorf("timer %+v", s.Timer)
	}
	if s.Shutdown == nil || *s.Shutdown != 2 || s.Mark == nil || *s.Mark != 0x10 || s.CgroupID == nil || *s.CgroupID != 0xabcdef || s.TOS == nil || *s.TOS != 0x10 {
		t.Errorf("attributes decoded wrong: %+v", s)
	}
	if s.Mem == nil || s.Mem.RmemAlloc != 1 || s.Mem.Drops != 9 {
		t.Errorf("meminfo %+v", s.Mem)
	}
	if s.TCP == nil || s.TCP.Len != 12 || s.TCP.Info.Rto != 204000 || s.TCP.Congestion != "cubic" || s.TCP.Info.Rtt != 0 {
		t.Errorf("tcp info %+v", s.TCP)
	}
	if s.V6Only != nil || s.TClass != nil || s.Unix != nil {
		t.Errorf("attributes that were not sent are set: %+v", s)
	}

	// The row is reused: a second message must not inherit the first's
	// optional attributes.
	kept := Clone(s)
	s2, _, err := d.decode(pass{proto: sock.ProtoTCP, family: unix.AF_INET}, inetMsg(5, sock.TimeWait, local, peer))
	if err != nil {
		t.Fatal(err)
	}
	if s2.Mark != nil || s2.TCP != nil || s2.Mem != nil || s2.Cookie != 5 {
		t.Errorf("second row inherited state: %+v", s2)
	}
	if *kept.Mark != 0x10 || kept.TCP.Congestion != "cubic" || kept.Cookie != 0x1_0000_0002 {
		t.Errorf("Clone shares storage with the reused row: %+v", kept)
	}
}

func TestDecodeMalformed(t *testing.T) {
	d := newDecoder(1)
	p := pass{proto: sock.ProtoTCP, family: unix.AF_INET}
	if _, _, err := d.decode(p, make([]byte, 10)); err == nil {
		t.Error("short inet_diag_msg accepted")
	}
	bad := inetMsg(1, sock.Listen, netip.MustParseAddrPort("1.2.3.4:1"), netip.MustParseAddrPort("0.0.0.0:0"))
	bad = append(bad, 50, 0, 1, 0) // attribute claiming 50 bytes
	if _, _, err := d.decode(p, bad); err == nil || !strings.Contains(err.Error(), "malformed attribute") {
		t.Errorf("overlong attribute: %v", err)
	}
	if _, _, err := d.decode(pass{proto: sock.ProtoUNIX}, make([]byte, 3)); err == nil {
		t.Error("short unix_diag_msg accepted")
	}
}

func TestDecodeUnix(t *testing.T) {
	d := newDecoder(3)
	b := make([]byte, unixMsgLen)
	b[0], b[1], b[2] = unix.AF_UNIX, unix.SOCK_STREAM, uint8(sock.Listen)
	ne.PutUint32(b[4:], 777)
	ne.PutUint32(b[8:], 0x55)
	icons := make([]byte, 8)
	ne.PutUint32(icons, 801)
	ne.PutUint32(icons[4:], 802)
	rq := make([]byte, 8)
	ne.PutUint32(rq, 2)
	ne.PutUint32(rq[4:], 128)
	b = append(b, attr(unixDiagName, []byte("\x00abs\x00x"))...)
	b = append(b, attr(unixDiagIcons, icons)...)
	b = append(b, attr(unixDiagRqlen, rq)...)
	b = append(b, attr(unixDiagUID, []byte{0xe8, 3, 0, 0})...)
	s, ok, err := d.decode(pass{proto: sock.ProtoUNIX, family: unix.AF_UNIX}, b)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if s.Unix.Path != "@abs@x" || s.Inode != 777 || s.Cookie != 0x55 || s.RecvQ != 2 || s.SendQ != 128 || s.UID != 1000 ||
		len(s.Unix.Pending) != 2 || s.Unix.Pending[1] != 802 || s.State != sock.Listen || s.Unix.Type != unix.SOCK_STREAM {
		t.Errorf("unix row %+v %+v", s, s.Unix)
	}
	if got := unixName([]byte("/run/x.sock\x00")); got != "/run/x.sock" {
		t.Errorf("path with trailing NUL: %q", got)
	}
}

func TestWalkMessages(t *testing.T) {
	var n int
	count := func([]byte) error { n++; return nil }
	// Two rows, then DONE; a stale reply of another sequence is skipped.
	b := append(nlmsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI, 7, []byte{1}),
		nlmsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI, 6, []byte{1})...)
	b = append(b, nlmsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI|unix.NLM_F_DUMP_INTR, 7, []byte{1})...)
	b = append(b, nlmsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, 7, make([]byte, 4))...)
	done, intr, err := walkMessages(b, 7, count)
	if !done || !intr || err != nil || n != 2 {
		t.Errorf("walk: done=%v intr=%v err=%v rows=%d", done, intr, err, n)
	}
	e := make([]byte, 4)
	eperm := -int32(unix.EPERM)
	ne.PutUint32(e, uint32(eperm))
	if _, _, err := walkMessages(nlmsg(unix.NLMSG_ERROR, 0, 7, e), 7, count); !errors.Is(err, syscall.EPERM) {
		t.Errorf("NLMSG_ERROR: %v", err)
	}
	if _, _, err := walkMessages(nlmsg(unix.NLMSG_DONE, 0, 7, e), 7, count); !errors.Is(err, syscall.EPERM) {
		t.Errorf("error in NLMSG_DONE: %v", err)
	}
	bad := nlmsg(unix.SOCK_DIAG_BY_FAMILY, 0, 7, nil)
	ne.PutUint32(bad, 999)
	if _, _, err := walkMessages(bad, 7, count); err == nil {
		t.Error("overlong message accepted")
	}
}

// scriptTransport answers each request with the datagrams reply(n, seq)
// returns for the n-th request (from 1).
type scriptTransport struct {
	reply   func(n int, seq uint32) [][]byte
	n       int
	pending [][]byte
}

func (s *scriptTransport) send(msg []byte) error {
	s.n++
	s.pending = s.reply(s.n, ne.Uint32(msg[8:]))
	return nil
}

func (s *scriptTransport) recv() ([]byte, error) {
	if len(s.pending) == 0 {
		return nil, errors.New("script: no reply left")
	}
	b := s.pending[0]
	s.pending = s.pending[1:]
	return b, nil
}
func (s *scriptTransport) close()     {}
func (s *scriptTransport) interrupt() {}

// TestInterruptedDumpRetries: a dump flagged NLM_F_DUMP_INTR is run again
// without delivering a row twice, and gives up after 3 attempts.
func TestInterruptedDumpRetries(t *testing.T) {
	lp := netip.MustParseAddrPort("127.0.0.1:80")
	row := func(seq uint32, cookie uint64, flags uint16) []byte {
		return nlmsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI|flags, seq, inetMsg(cookie, sock.Listen, lp, netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
	}
	done := func(seq uint32) []byte { return nlmsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, make([]byte, 4)) }
	run := func(interruptions int) ([]uint64, error) {
		tr := &scriptTransport{reply: func(n int, seq uint32) [][]byte {
			if n <= interruptions {
				// Rows 1 and 2, then the kernel notices a change.
				return [][]byte{append(row(seq, 1, 0), row(seq, 2, unix.NLM_F_DUMP_INTR)...), done(seq)}
			}
			return [][]byte{append(append(row(seq, 1, 0), row(seq, 2, 0)...), row(seq, 3, 0)...), done(seq)}
		}}
		c := &conn{t: tr, netnsIno: 1}
		var got []uint64
		err := c.runPass(t.Context(), pass{proto: sock.ProtoTCP, family: unix.AF_INET},
			Request{Protos: []sock.Proto{sock.ProtoTCP}, States: sock.AllStates}, newDecoder(1),
			func(s *sock.Socket) error { got = append(got, s.Cookie); return nil })
		return got, err
	}
	got, err := run(2)
	if err != nil || len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Errorf("after 2 interruptions: rows %v, err %v; want [1 2 3]", got, err)
	}
	if _, err := run(3); !errors.Is(err, ErrInterrupted) {
		t.Errorf("after 3 interruptions: %v, want ErrInterrupted", err)
	}
}

// TestCallbackErrorDrainsDump: when the row callback fails midway, the
// dump's remaining batches are still read (the reader goroutine runs to
// NLMSG_DONE), so the socket is clean for the next request, which then
// gets its own rows.
func TestCallbackErrorDrainsDump(t *testing.T) {
	lp := netip.MustParseAddrPort("127.0.0.1:80")
	row := func(seq uint32, cookie uint64) []byte {
		return nlmsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI, seq, inetMsg(cookie, sock.Listen, lp, netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
	}
	tr := &scriptTransport{reply: func(n int, seq uint32) [][]byte {
		return [][]byte{append(row(seq, 1), row(seq, 2)...), row(seq, 3), row(seq, 4),
			nlmsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, make([]byte, 4))}
	}}
	c := &conn{t: tr, netnsIno: 1}
	req := Request{Protos: []sock.Proto{sock.ProtoTCP}, States: sock.AllStates}
	stop := errors.New("stop")
	err := c.runPass(t.Context(), pass{proto: sock.ProtoTCP, family: unix.AF_INET}, req, newDecoder(1),
		func(s *sock.Socket) error { return stop })
	var cbErr callbackError
	if !errors.As(err, &cbErr) || cbErr.err != stop {
		t.Fatalf("callback error: %v", err)
	}
	if len(tr.pending) != 0 {
		t.Fatalf("%d batches of the dump left unread", len(tr.pending))
	}
	var got []uint64
	err = c.runPass(t.Context(), pass{proto: sock.ProtoTCP, family: unix.AF_INET}, req, newDecoder(1),
		func(s *sock.Socket) error { got = append(got, s.Cookie); return nil })
	if err != nil || len(got) != 4 {
		t.Errorf("next dump: rows %v, err %v", got, err)
	}
}

func TestParseProcRaw(t *testing.T) {
	v4 := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
    1: 0100007F:0001 00000000:0000 07 00000010:00000020 00:00000000 00000000  1000        0 13657 2 0000000000000000 0
`
	v6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  255: 00000000000000000000000001000000:003A 00000000000000000000000000000000:0000 01 00000000:00000000 00:00000000 00000000     0        0 13658 2 0000000000000000 0
`
	var rows []*sock.Socket
	collect := func(s *sock.Socket) error { rows = append(rows, Clone(s)); return nil }
	var row sock.Socket
	if err := parseProcRaw([]byte(v4), unix.AF_INET, 5, sock.AllStates, &row, collect); err != nil {
		t.Fatal(err)
	}
	if err := parseProcRaw([]byte(v6), unix.AF_INET6, 5, sock.AllStates.Without(sock.Established), &row, collect); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("rows %d, want 1 (the ESTABLISHED raw6 socket is filtered out)", len(rows))
	}
	r := rows[0]
	if r.Local != netip.MustParseAddrPort("127.0.0.1:1") || r.State != sock.Close || r.SendQ != 16 || r.RecvQ != 32 ||
		r.UID != 1000 || r.Inode != 13657 || r.RawProtocol != 1 || r.Proto != sock.ProtoRAW || r.NetNS != 5 {
		t.Errorf("raw row %+v", r)
	}
	rows = nil
	if err := parseProcRaw([]byte(v6), unix.AF_INET6, 5, sock.AllStates, &row, collect); err != nil || len(rows) != 1 || rows[0].Local != netip.MustParseAddrPort("[::1]:58") {
		t.Errorf("raw6: %v %+v", err, rows)
	}
	if err := parseProcRaw([]byte("hdr\n 1: zz:1 00:0 07\n"), unix.AF_INET, 5, sock.AllStates, &row, collect); err == nil {
		t.Error("garbage accepted")
	}
}

func TestErrorNamesProtocolAndNamespace(t *testing.T) {
	err := &Error{Proto: sock.ProtoTCP, Family: unix.AF_INET6, NS: netns.ByName("x"), Err: syscall.EPERM}
	if got, want := err.Error(), "sock_diag tcp/inet6 in netns /run/netns/x: operation not permitted"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if !errors.Is(err, syscall.EPERM) {
		t.Error("errno not unwrapped")
	}
	u := &Error{Proto: sock.ProtoUNIX, Family: unix.AF_UNIX, NS: netns.Namespace{}, Err: syscall.EPERM}
	if got := u.Error(); got != "sock_diag unix in netns self: operation not permitted" {
		t.Errorf("%q", got)
	}
}

// TestDecodeULPAndOptions decodes the attributes --tos, --inet-sockopt and
// -i's tcp-ulp details read, laid out as the kernel sends them: kTLS's
// nested INET_DIAG_ULP_INFO (name, then INET_ULP_INFO_TLS with u16
// attributes and the ZC_RO_TX flag). The kernels here lack kTLS, so this
// is where the decoding of a kTLS reply is checked.
func TestDecodeULPAndOptions(t *testing.T) {
	u16 := func(v uint16) []byte { b := make([]byte, 2); ne.PutUint16(b, v); return b }
	u32 := func(v uint32) []byte { b := make([]byte, 4); ne.PutUint32(b, v); return b }
	tls := slices.Concat(attr(tlsInfoVersion, u16(0x0304)), attr(tlsInfoCipher, u16(52)),
		attr(tlsInfoTXConf, u16(2)), attr(tlsInfoRXConf, u16(1)), attr(tlsInfoZCROTX, nil))
	ulp := slices.Concat(attr(inetULPInfoName, []byte("tls\x00")), attr(inetULPInfoTLS, tls))
	local, peer := netip.MustParseAddrPort("127.0.0.1:4433"), netip.MustParseAddrPort("127.0.0.1:50000")
	msg := inetMsg(7, sock.Established, local, peer,
		attr(inetDiagInfo, make([]byte, 104)), attr(inetDiagULPInfo, ulp),
		attr(inetDiagClassID, u32(6)), attr(inetDiagSockopt, []byte{0x12, 0x04}))
	s, ok, err := newDecoder(1).decode(pass{proto: sock.ProtoTCP, family: unix.AF_INET}, msg)
	if err != nil || !ok {
		t.Fatalf("decode: %v %v", ok, err)
	}
	if s.TCP == nil || s.TCP.ULP == nil || s.TCP.ULP.Name != "tls" || s.TCP.ULP.TLS == nil {
		t.Fatalf("ULP not decoded: %+v", s.TCP)
	}
	want := sock.TLSInfo{Version: 0x0304, Cipher: 52, TXConf: 2, RXConf: 1, ZeroCopyTX: true, Has: 0b111110}
	if *s.TCP.ULP.TLS != want {
		t.Errorf("TLS = %+v, want %+v", *s.TCP.ULP.TLS, want)
	}
	if s.ClassID == nil || *s.ClassID != 6 || s.Sockopt == nil || *s.Sockopt != [2]byte{0x12, 0x04} {
		t.Errorf("class id %v, sockopt %v", s.ClassID, s.Sockopt)
	}
	c := Clone(s)
	if c.TCP.ULP == s.TCP.ULP || c.TCP.ULP.TLS == s.TCP.ULP.TLS || *c.TCP.ULP.TLS != want {
		t.Error("Clone shares or loses the ULP")
	}
}

// TestCloneSharesNothing: every pointer and slice reachable from a clone
// is its own, whatever fields sock.Socket grows (checked by reflection, so
// a new pointer field Clone forgets fails here), and the values are equal.
func TestCloneSharesNothing(t *testing.T) {
	u8, u32, u64 := uint8(1), uint32(2), uint64(3)
	sockopt := [2]byte{1, 2}
	s := &sock.Socket{
		Mark: &u32, CgroupID: &u64, Shutdown: &u8, TOS: &u8, TClass: &u8, V6Only: new(bool), ClassID: &u32,
		Sockopt: &sockopt, Mem: &sock.MemInfo{RmemAlloc: 1},
		TCP: &sock.TCPInfo{
			BBR: &unix.TCPBBRInfo{}, DCTCP: &unix.TCPDCTCPInfo{}, Vegas: &unix.TCPVegasInfo{},
			ULP:     &sock.ULPInfo{Name: "mptcp", TLS: &sock.TLSInfo{Version: 1}, MPTCP: &sock.MPTCPSubflow{Flags: 3}},
			MD5Keys: []sock.MD5Key{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Key: []byte("k")}},
		},
		Unix:    &sock.UnixInfo{Pending: []uint64{1}, VFS: &sock.UnixVFS{Dev: 1}},
		Packet:  &sock.PacketInfo{RxRing: &sock.PacketRing{}, TxRing: &sock.PacketRing{}, Fanout: &u32},
		Netlink: &sock.NetlinkInfo{},
		Procs:   []sock.Process{{PID: 1}},
	}
	c := Clone(s)
	if !reflect.DeepEqual(s, c) {
		t.Fatalf("clone differs:\n%+v\n%+v", s, c)
	}
	var walk func(path string, a, b reflect.Value)
	walk = func(path string, a, b reflect.Value) {
		if a.Type().PkgPath() == "net/netip" {
			return // immutable values (an address's zone is an interned handle)
		}
		switch a.Kind() {
		case reflect.Pointer:
			if a.IsNil() {
				return
			}
			if a.Pointer() == b.Pointer() {
				t.Errorf("%s is shared", path)
			}
			walk(path, a.Elem(), b.Elem())
		case reflect.Slice:
			if a.Len() == 0 {
				return
			}
			if a.Pointer() == b.Pointer() {
				t.Errorf("%s is shared", path)
			}
			for i := 0; i < a.Len(); i++ {
				walk(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i))
			}
		case reflect.Struct:
			for i := 0; i < a.NumField(); i++ {
				walk(path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))
			}
		}
	}
	walk("Socket", reflect.ValueOf(s), reflect.ValueOf(c))
}
