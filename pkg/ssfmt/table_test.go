package ssfmt

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// stubNames resolves from fixed tables, standing in for /etc.
type stubNames struct{}

func (stubNames) Service(port uint16, proto string) (string, bool) {
	m := map[uint16]string{22: "ssh", 80: "http", 8080: "http-alt", 53: "domain", 40000: "never-shown"}
	n, ok := m[port]
	return n, ok
}
func (stubNames) Protocol(n uint8) (string, bool) {
	if n == 1 {
		return "icmp", true
	}
	return "", false
}
func (stubNames) Host(a netip.Addr) (string, bool) {
	if a == netip.MustParseAddr("127.0.0.1") {
		return "localhost", true
	}
	return "", false
}
func (stubNames) Iface(i uint32) (string, bool) {
	if i == 1 {
		return "lo", true
	}
	return "", false
}
func (stubNames) Cgroup(id uint64) (string, bool) {
	if id == 1 {
		return "/", true
	}
	return "", false
}

func tcp4(local, peer string, st sock.State) sock.Socket {
	return sock.Socket{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: st,
		Local: netip.MustParseAddrPort(local), Peer: netip.MustParseAddrPort(peer)}
}

func tcp6(local, peer string, st sock.State, v6only bool) sock.Socket {
	s := sock.Socket{Proto: sock.ProtoTCP, Family: unix.AF_INET6, State: st,
		Local: netip.MustParseAddrPort(local), Peer: netip.MustParseAddrPort(peer)}
	s.V6Only = &v6only
	return s
}

func render(opts Options, rows ...sock.Socket) string {
	var b bytes.Buffer
	t := NewTable(&b, opts)
	for i := range rows {
		t.Add(&rows[i])
	}
	if err := t.Close(); err != nil {
		panic(err)
	}
	return b.String()
}

// The expected tables follow ss's compact layout: each column as wide as
// its widest field plus the one-space left delimiter, "Local Address:" and
// "Peer Address:" right-aligned, the rest left-aligned and padded.
func TestTableCompact(t *testing.T) {
	rows := []sock.Socket{
		tcp4("0.0.0.0:80", "0.0.0.0:0", sock.Listen),
		tcp4("127.0.0.1:8080", "127.0.0.1:42088", sock.Established),
	}
	rows[1].RecvQ = 1000
	got := render(Options{ShowState: true, Numeric: true}, rows...)
	want := "" +
		"State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n" +
		"LISTEN 0      0            0.0.0.0:80        0.0.0.0:*           \n" +
		"ESTAB  1000   0          127.0.0.1:8080    127.0.0.1:42088       \n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestTableHeaderOnlyAndNoHeader(t *testing.T) {
	if got, want := render(Options{ShowState: true}), "State Recv-Q Send-Q Local Address:Port Peer Address:PortProcess\n"; got != want {
		t.Errorf("empty table = %q, want %q", got, want)
	}
	if got := render(Options{ShowState: true, NoHeader: true}); got != "" {
		t.Errorf("empty table with -H = %q, want nothing", got)
	}
}

// ss does not count the last row's extension field when sizing its
// column: the header is padded to the widest earlier one.
func TestTableLastRowExtQuirk(t *testing.T) {
	a := tcp4("127.0.0.1:1", "127.0.0.1:2", sock.Established)
	b := tcp4("127.0.0.1:3", "127.0.0.1:4", sock.Established)
	a.Timer = sock.Timer{Kind: 3, Expires: time.Second}
	b.Timer = sock.Timer{Kind: 2, Expires: 119 * time.Minute}
	got := render(Options{Numeric: true, Timers: true, NoHeader: true}, a, b)
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	// Row a's extension " timer:(timewait,1sec,0)" sets the width; row
	// b's longer one is not counted, so row a gets no padding.
	if !strings.HasSuffix(lines[0], " timer:(timewait,1sec,0)") {
		t.Errorf("row 1 = %q", lines[0])
	}
	if !strings.HasSuffix(lines[1], " timer:(keepalive,119min,0)") {
		t.Errorf("row 2 = %q", lines[1])
	}
	got2 := render(Options{Numeric: true, Timers: true, NoHeader: true}, b, a)
	lines2 := strings.Split(strings.TrimSuffix(got2, "\n"), "\n")
	if !strings.HasSuffix(lines2[1], " timer:(timewait,1sec,0)   ") {
		t.Errorf("last row not padded to the first row's width: %q", lines2[1])
	}
}

func TestTableWidthStretch(t *testing.T) {
	got := render(Options{ShowState: true, Numeric: true, Width: 100}, tcp4("0.0.0.0:80", "0.0.0.0:0", sock.Listen))
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		if len(l) != 100 {
			t.Errorf("line %q is %d wide, want the terminal's 100", l, len(l))
		}
	}
}

// ss renders in batches of about 5 MB: rows after a batch boundary are
// laid out with widths that only grow, rows before it are not widened by
// later rows.
func TestTableBatches(t *testing.T) {
	var rows []sock.Socket
	for i := 0; i < 100000; i++ {
		rows = append(rows, tcp4("10.0.0.1:1", "10.0.0.2:2", sock.Established))
	}
	rows = append(rows, tcp6("[2001:db8::1234:5678]:1", "[2001:db8::1]:2", sock.Established, false))
	out := render(Options{Numeric: true, NoHeader: true}, rows...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(rows) {
		t.Fatalf("%d lines for %d rows", len(lines), len(rows))
	}
	first, last := len(lines[0]), len(lines[len(lines)-2])
	if first >= last {
		t.Errorf("no batch boundary: first row %d wide, row before the wide one %d wide", first, last)
	}
	boundary := 0
	for i := range lines {
		if len(lines[i]) != first {
			boundary = i
			break
		}
	}
	// A row here is 8 tokens, 52 bytes with their 2-byte headers and
	// even padding; the batch ends once a fifth 1 MiB chunk is started,
	// after 4*(1 MiB - 16) bytes, about 80660 rows.
	if boundary < 80000 || boundary > 81000 {
		t.Errorf("batch boundary at row %d, want where 5 MiB chunks fill", boundary)
	}
}

func TestInetAddresses(t *testing.T) {
	mapped := tcp6("[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:40000", sock.Established, false)
	wild := tcp6("[::]:22", "[::]:0", sock.Listen, false)
	wildV6only := tcp6("[::]:22", "[::]:0", sock.Listen, true)
	bound := tcp4("127.0.0.1:53", "0.0.0.0:0", sock.Listen)
	bound.Iface = 1
	unknownIf := tcp4("127.0.0.1:53", "0.0.0.0:0", sock.Listen)
	unknownIf.Iface = 7
	ephemeral := tcp4("127.0.0.1:40000", "127.0.0.1:80", sock.Established)
	cases := []struct {
		s    sock.Socket
		opts Options
		want string
	}{
		{mapped, Options{Numeric: true}, "[::ffff:127.0.0.1]:8080 [::ffff:127.0.0.1]:40000"},
		{mapped, Options{Names: stubNames{}, Resolve: true, Ephemeral: PortRange{32768, 60999}}, "localhost:http-alt localhost:40000"},
		{ephemeral, Options{Names: stubNames{}, Ephemeral: PortRange{32768, 60999}}, "127.0.0.1:40000 127.0.0.1:http"},
		// The zero range is ss's fallback, 1024-4999.
		{ephemeral, Options{Names: stubNames{}}, "127.0.0.1:never-shown 127.0.0.1:http"},
		{wild, Options{Names: stubNames{}}, "*:ssh *:*"},
		{wildV6only, Options{Names: stubNames{}}, "[::]:ssh [::]:*"},
		{bound, Options{Names: stubNames{}}, "127.0.0.1%lo:domain 0.0.0.0:*"},
		{unknownIf, Options{Numeric: true}, "127.0.0.1%if7:53 0.0.0.0:*"},
	}
	for _, c := range cases {
		c.opts.NoHeader = true
		got := strings.Join(strings.Fields(render(c.opts, c.s)), " ")
		if !strings.HasSuffix(got, c.want) {
			t.Errorf("%v %v: got %q, want it to end with %q", c.s.Local, c.s.Peer, got, c.want)
		}
	}
}

func TestRawAndUnixRows(t *testing.T) {
	raw := sock.Socket{Proto: sock.ProtoRAW, Family: unix.AF_INET, State: sock.Close,
		Local: netip.MustParseAddrPort("0.0.0.0:1"), Peer: netip.MustParseAddrPort("0.0.0.0:0"), Inode: 5, Cookie: 0x1f}
	raw255 := raw
	raw255.Local = netip.MustParseAddrPort("0.0.0.0:255")
	procRaw := raw
	procRaw.Cookie = 0 // read from /proc/net/raw: ss prints no details
	sd := uint8(0)
	path := sock.Socket{Proto: sock.ProtoUNIX, Family: unix.AF_UNIX, State: sock.Listen, Inode: 13651, Shutdown: &sd,
		Unix: &sock.UnixInfo{Type: unix.SOCK_STREAM, Path: "/run/x.sock", Pending: []uint64{17, 18}}}
	abstract := sock.Socket{Proto: sock.ProtoUNIX, Family: unix.AF_UNIX, State: sock.Close, Inode: 3_000_000_000,
		Unix: &sock.UnixInfo{Type: unix.SOCK_DGRAM, Path: "\x00abs\x00x"}}
	pair := sock.Socket{Proto: sock.ProtoUNIX, Family: unix.AF_UNIX, State: sock.Established, Inode: 9,
		Unix: &sock.UnixInfo{Type: unix.SOCK_SEQPACKET, PeerInode: 10}}
	cases := []struct {
		s    sock.Socket
		opts Options
		want string
	}{
		{raw, Options{Names: stubNames{}}, "raw UNCONN 0 0 0.0.0.0:icmp 0.0.0.0:*"},
		{raw255, Options{Names: stubNames{}}, "raw UNCONN 0 0 0.0.0.0:ipproto-255 0.0.0.0:*"},
		{raw, Options{Numeric: true, Extended: true}, "raw UNCONN 0 0 0.0.0.0:1 0.0.0.0:* ino:5 sk:1f"},
		{procRaw, Options{Numeric: true, Extended: true, Memory: true}, "raw UNCONN 0 0 0.0.0.0:1 0.0.0.0:*"},
		{path, Options{Extended: true}, "u_str LISTEN 0 0 /run/x.sock 13651 * 0 <-> peers: 17 18"},
		{abstract, Options{}, "u_dgr UNCONN 0 0 @abs@x -1294967296 * 0"},
		{pair, Options{}, "u_seq ESTAB 0 0 * 9 * 10"},
	}
	for _, c := range cases {
		c.opts.NoHeader, c.opts.ShowNetid, c.opts.ShowState = true, true, true
		got := strings.Join(strings.Fields(render(c.opts, c.s)), " ")
		if got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}

func TestInetDetails(t *testing.T) {
	s := tcp6("[::1]:8443", "[::]:0", sock.Listen, true)
	s.UID, s.Inode, s.Cookie = 1000, 13633, 0x23
	mark, cg, sd := uint32(0x10), uint64(1), uint8(1)
	s.Mark, s.CgroupID, s.Shutdown = &mark, &cg, &sd
	got := strings.Join(strings.Fields(render(Options{Numeric: true, Extended: true, NoHeader: true, Names: stubNames{}}, s)), " ")
	want := "0 0 [::1]:8443 [::]:* uid:1000 ino:13633 sk:23 fwmark:0x10 cgroup:/ v6only:1 -->"
	if !strings.HasSuffix(got, want) {
		t.Errorf("got %q, want suffix %q", got, want)
	}
	cg = 0x42
	got = strings.Join(strings.Fields(render(Options{Numeric: true, Extended: true, NoHeader: true}, s)), " ")
	if !strings.Contains(got, " cgroup:unreachable:42 ") {
		t.Errorf("unresolved cgroup: %q", got)
	}
}

// estabInfo is the tcp_info of an idle loopback connection that ss 6.1
// printed as estabLine (numbers taken from a real dump).
func estabInfo() *sock.TCPInfo {
	ti := &sock.TCPInfo{Len: unix.SizeofTCPInfo, Congestion: "bbr", BBR: &unix.TCPBBRInfo{Min_rtt: 30}}
	i := &ti.Info
	i.Options = optWscale | optTimestamps | optSACK
	ti.SndWscale, ti.RcvWscale, ti.DeliveryRateAppLimited = 10, 10, true
	i.Rto, i.Rtt, i.Rttvar, i.Ato = 200000, 30, 15, 40000
	i.Snd_mss, i.Pmtu, i.Rcv_mss, i.Advmss, i.Snd_cwnd = 32768, 65535, 1000, 65483, 10
	i.Snd_ssthresh = 2147483647
	i.Bytes_received, i.Segs_out, i.Segs_in, i.Data_segs_in = 1000, 1, 3, 1
	i.Last_data_sent, i.Last_data_recv, i.Last_ack_recv = 6732, 6732, 6732
	i.Pacing_rate, i.Max_pacing_rate = 31215358139, ^uint64(0)
	i.Delivered, i.Rcv_space, i.Rcv_ssthresh, i.Min_rtt, i.Snd_wnd = 1, 65483, 70173, 30, 65536
	i.Reordering = 3
	return ti
}

const estabLine = " bbr wscale:10,10 rto:200 rtt:0.03/0.015 ato:40 mss:32768 pmtu:65535 rcvmss:1000 advmss:65483 cwnd:10 bytes_received:1000 segs_out:1 segs_in:3 data_segs_in:1 bbr:(bw:0bps,mrtt:0.03) send 87381333333bps lastsnd:6732 lastrcv:6732 lastack:6732 pacing_rate 249722865112bps delivered:1 app_limited rcv_space:65483 rcv_ssthresh:70173 minrtt:0.03 snd_wnd:65536"

func TestTCPInfoString(t *testing.T) {
	ti := estabInfo()
	if got := TCPInfoString(ti, sock.Established, false, true); got != estabLine {
		t.Errorf("got  %q\nwant %q", got, estabLine)
	}
	// With -o/-e the option words lead; without -n rates are scaled.
	got := TCPInfoString(ti, sock.Established, true, false)
	if !strings.HasPrefix(got, " ts sack bbr wscale:10,10") || !strings.Contains(got, " send 87.4Gbps ") ||
		!strings.Contains(got, " pacing_rate 250Gbps ") {
		t.Errorf("got %q", got)
	}
	// An older kernel's shorter struct: nothing past Len is shown.
	ti.Len = int(unsafe.Offsetof(ti.Info.Pacing_rate))
	got = TCPInfoString(ti, sock.Established, false, true)
	if strings.Contains(got, "pacing_rate") || strings.Contains(got, "minrtt") || strings.Contains(got, "snd_wnd") ||
		!strings.Contains(got, "rcv_space:65483") {
		t.Errorf("truncated tcp_info shown past its length: %q", got)
	}
	// Retransmits, sacked (hidden for listeners), reordering, busy time,
	// dctcp and vegas.
	ti = &sock.TCPInfo{DCTCP: &unix.TCPDCTCPInfo{Enabled: 1, Ce_state: 1, Alpha: 2, Ab_ecn: 3, Ab_tot: 4},
		Vegas: &unix.TCPVegasInfo{Enabled: 1, Rtt: 1000}}
	ti.Info.Retrans, ti.Info.Total_retrans, ti.Info.Sacked, ti.Info.Reordering = 1, 5, 2, 4
	ti.Info.Busy_time, ti.Info.Rwnd_limited = 2000000, 500000
	ti.Info.Snd_cwnd, ti.Info.Snd_mss, ti.Info.Rtt = 10, 1000, 500
	got = TCPInfoString(ti, sock.Established, false, true)
	for _, want := range []string{" cwnd:10 ", " dctcp:(ce_state:1,alpha:2,ab_ecn:3,ab_tot:4) send 80000000bps",
		" busy:2000ms rwnd_limited:500ms(25.0%)", " retrans:1/5 sacked:2 reordering:4"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if got := TCPInfoString(ti, sock.Listen, false, true); strings.Contains(got, "sacked") {
		t.Errorf("listener shows sacked: %q", got)
	}
	ti.DCTCP.Enabled = 0
	if got := TCPInfoString(ti, sock.Established, false, true); !strings.Contains(got, " dctcp:fallback_mode") {
		t.Errorf("%q lacks dctcp:fallback_mode", got)
	}
}

func TestInfoLayout(t *testing.T) {
	s := tcp4("127.0.0.1:8080", "127.0.0.1:42088", sock.Established)
	s.TCP = estabInfo()
	s.Mem = &sock.MemInfo{RmemAlloc: 1832, RcvBuf: 131072, SndBuf: 3939840, FwdAlloc: 2264}
	out := render(Options{Numeric: true, Info: true, Memory: true, NoHeader: true}, s)
	want := "\t skmem:(r1832,rb131072,t0,tb3939840,f2264,w0,o0,bl0,d0)" + estabLine
	if lines := strings.Split(out, "\n"); len(lines) != 3 || lines[1] != want {
		t.Errorf("got %q, want second line %q", out, want)
	}
	out = render(Options{Numeric: true, Info: true, OneLine: true, NoHeader: true}, s)
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "42088"+estabLine+"\n") {
		t.Errorf("-O output %q", out)
	}
	// ss -i prints nothing extra for UDP; -m does.
	u := s
	u.Proto, u.TCP = sock.ProtoUDP, nil
	if out := render(Options{Numeric: true, Info: true, NoHeader: true}, u); strings.Contains(out, "\t") {
		t.Errorf("-i on UDP: %q", out)
	}
	if out := render(Options{Numeric: true, Memory: true, NoHeader: true}, u); !strings.Contains(out, "\n\t skmem:(") {
		t.Errorf("-m on UDP: %q", out)
	}
}

func TestJSON(t *testing.T) {
	s := tcp6("[::1]:8443", "[::1]:46156", sock.Established, false)
	s.RecvQ, s.Inode, s.Cookie, s.UID, s.Iface = 300, 13639, 0x24, 1000, 1
	s.Timer = sock.Timer{Kind: 2, Expires: 1500 * 1e6}
	s.Procs = []sock.Process{{Comm: "python3", PID: 9897, FD: 6}}
	s.TCP = estabInfo()
	s.TCP.Len = int(unsafe.Offsetof(s.TCP.Info.Bytes_acked))
	var b bytes.Buffer
	j := NewJSONWriter(&b, stubNames{})
	if err := j.Add(&s); err != nil {
		t.Fatal(err)
	}
	u := sock.Socket{Proto: sock.ProtoUNIX, Family: unix.AF_UNIX, State: sock.Listen, Inode: 5,
		Unix: &sock.UnixInfo{Type: unix.SOCK_STREAM, Path: "@abs", Pending: []uint64{7}}}
	if err := j.Add(&u); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", b.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("line 1 is not JSON: %v", err)
	}
	want := map[string]any{"netid": "tcp", "family": "inet6", "state": "ESTABLISHED",
		"recvq": 300.0, "saddr": "::1", "sport": 8443.0, "daddr": "::1", "dport": 46156.0, "iface": "lo",
		"uid": 1000.0, "inode": 13639.0, "cookie": 36.0, "v6only": false}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	timer := m["timer"].(map[string]any)
	if timer["name"] != "keepalive" || timer["expires_ms"] != 1500.0 {
		t.Errorf("timer = %v", timer)
	}
	if p := m["owners"].([]any)[0].(map[string]any); p["comm"] != "python3" || p["pid"] != 9897.0 || p["fd"] != 6.0 {
		t.Errorf("owners = %v", m["owners"])
	}
	ti := m["tcp_info"].(map[string]any)
	if ti["rtt_us"] != 30.0 || ti["snd_wscale"] != 10.0 || ti["delivery_rate_app_limited"] != true || ti["congestion"] != "bbr" {
		t.Errorf("tcp_info = %v", ti)
	}
	if _, ok := ti["bytes_acked"]; ok {
		t.Errorf("tcp_info shows bytes_acked past the kernel's length: %v", ti)
	}
	// Keys keep the kernel's order.
	if strings.Index(lines[0], `"rto_us"`) > strings.Index(lines[0], `"rtt_us"`) {
		t.Errorf("tcp_info keys out of order: %s", lines[0])
	}
	m = nil
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatal(err)
	}
	if m["netid"] != "u_str" || m["path"] != "@abs" || m["peer_inode"] != 0.0 || m["family"] != "unix" {
		t.Errorf("unix line = %v", m)
	}
	if _, ok := m["sport"]; ok {
		t.Errorf("unix line has inet keys: %s", lines[1])
	}
}

func TestSummary(t *testing.T) {
	var s SockStat
	sockstat := "sockets: used 24\nTCP: inuse 8 orphan 0 tw 5 alloc 31 mem 17\nUDP: inuse 2 mem 1\nUDPLITE: inuse 0\nRAW: inuse 1\nFRAG: inuse 0 memory 0\n"
	sockstat6 := "TCP6: inuse 4\nUDP6: inuse 1\nUDPLITE6: inuse 0\nRAW6: inuse 1\nFRAG6: inuse 0 memory 0\n"
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs\nTcp: 1 200 120000 -1 10 5 0 0 7 100\n"
	for _, r := range []string{sockstat, sockstat6} {
		if err := s.ParseSockstat(strings.NewReader(r)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ParseSNMP(strings.NewReader(snmp)); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Summary(&b, s); err != nil {
		t.Fatal(err)
	}
	want := "Total: 24\n" +
		"TCP:   36 (estab 7, closed 24, orphaned 0, timewait 5)\n\n" +
		"Transport Total     IP        IPv6\n" +
		"RAW\t  2         1         1        \n" +
		"UDP\t  3         2         1        \n" +
		"TCP\t  12        8         4        \n" +
		"INET\t  17        11        6        \n" +
		"FRAG\t  0         0         0        \n\n"
	if b.String() != want {
		t.Errorf("got:\n%q\nwant:\n%q", b.String(), want)
	}
	// --json -s: the same figures as one JSON object.
	b.Reset()
	if err := SummaryJSON(&b, s); err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"sockets":24,"tcp":{"total":36,"estab":7,"closed":24,"orphaned":0,"timewait":5},` +
		`"transport":{"frag":{"total":0,"ipv4":0,"ipv6":0},"inet":{"total":17,"ipv4":11,"ipv6":6},` +
		`"raw":{"total":2,"ipv4":1,"ipv6":1},"tcp":{"total":12,"ipv4":8,"ipv6":4},"udp":{"total":3,"ipv4":2,"ipv6":1}}}` + "\n"
	if b.String() != wantJSON {
		t.Errorf("JSON:\n%s\nwant\n%s", b.String(), wantJSON)
	}
	if err := s.ParseSNMP(strings.NewReader("Ip: a\nIp: 1\n")); err == nil {
		t.Error("ParseSNMP accepted a file without Tcp lines")
	}
}
