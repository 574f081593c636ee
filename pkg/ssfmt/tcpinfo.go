package ssfmt

import (
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// tcp_info option bits (include/uapi/linux/tcp.h, TCPI_OPT_*).
const (
	optTimestamps = 1
	optSACK       = 2
	optWscale     = 4
	optECN        = 8
	optECNSeen    = 16
	optSynData    = 32
)

// Offsets of the two bit-field bytes of struct tcp_info
// (tcpi_snd_wscale:4/tcpi_rcv_wscale:4 and
// tcpi_delivery_rate_app_limited:1/tcpi_fastopen_client_fail:2), which
// pkg/sock keeps as named fields: the JSON form needs them to tell whether
// the kernel sent those bytes.
const (
	offWscale     = 6
	offAppLimited = 7
)

// visibleInfo returns a copy of ti.Info with every byte past ti.Len
// cleared: an older kernel sends a shorter struct and ss treats the
// missing fields as zero. A Len of 0 (a row built by hand, never a kernel
// reply) means the whole struct.
func visibleInfo(ti *sock.TCPInfo) unix.TCPInfo {
	info := ti.Info
	if ti.Len > 0 && ti.Len < unix.SizeofTCPInfo {
		raw := (*[unix.SizeofTCPInfo]byte)(unsafe.Pointer(&info))
		clear(raw[ti.Len:])
	}
	return info
}

// SprintBW formats a rate in bits per second as ss does: with -n the exact
// number, otherwise three significant digits and a k/M/G/T suffix.
func SprintBW(bw float64, numeric bool) string {
	switch {
	case numeric:
		return strconv.FormatFloat(bw, 'f', 0, 64)
	case bw >= 1e12:
		return CFormatG(bw/1e12, 3) + "T"
	case bw >= 1e9:
		return CFormatG(bw/1e9, 3) + "G"
	case bw >= 1e6:
		return CFormatG(bw/1e6, 3) + "M"
	case bw >= 1e3:
		return CFormatG(bw/1e3, 3) + "k"
	}
	return cG(bw)
}

// TCPInfoString formats the tcp_info line of ss -i (without the leading
// newline and tab), field for field in ss's order and units. state is the
// socket's state (ss hides sacked for listeners); withOpts adds the option
// words (ts, sack, ...) that ss prints only together with -o or -e.
func TCPInfoString(ti *sock.TCPInfo, state sock.State, withOpts, numeric bool) string {
	info := visibleInfo(ti)
	sndW, rcvW, appLimited := ti.SndWscale, ti.RcvWscale, ti.DeliveryRateAppLimited
	var b strings.Builder
	w := func(parts ...string) {
		for _, p := range parts {
			b.WriteString(p)
		}
	}
	u := func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
	d := func(v uint32) string { return strconv.FormatInt(int64(int32(v)), 10) }
	ull := func(v uint64) string { return strconv.FormatUint(v, 10) }
	ms := func(v uint32) string { return cG(float64(v) / 1000) }

	if withOpts {
		if info.Options&optTimestamps != 0 {
			w(" ts")
		}
		if info.Options&optSACK != 0 {
			w(" sack")
		}
		if info.Options&optECN != 0 {
			w(" ecn")
		}
		if info.Options&optECNSeen != 0 {
			w(" ecnseen")
		}
		if info.Options&optSynData != 0 {
			w(" fastopen")
		}
	}
	if ti.Congestion != "" {
		cong := ti.Congestion
		if len(cong) > 15 { // ss copies it into a char[16]
			cong = cong[:15]
		}
		w(" ", cong)
	}
	if info.Options&optWscale != 0 {
		w(" wscale:", strconv.Itoa(int(sndW)), ",", strconv.Itoa(int(rcvW)))
	}
	if info.Rto != 0 && info.Rto != 3000000 {
		w(" rto:", ms(info.Rto))
	}
	if info.Backoff != 0 {
		w(" backoff:", u(uint32(info.Backoff)))
	}
	if info.Rtt != 0 {
		w(" rtt:", ms(info.Rtt), "/", ms(info.Rttvar))
	}
	if info.Ato != 0 {
		w(" ato:", ms(info.Ato))
	}
	if info.Snd_mss != 0 {
		w(" mss:", d(info.Snd_mss))
	}
	if info.Pmtu != 0 {
		w(" pmtu:", u(info.Pmtu))
	}
	if info.Rcv_mss != 0 {
		w(" rcvmss:", d(info.Rcv_mss))
	}
	if info.Advmss != 0 {
		w(" advmss:", d(info.Advmss))
	}
	if info.Snd_cwnd != 0 {
		w(" cwnd:", u(info.Snd_cwnd))
	}
	if info.Snd_ssthresh < 0xFFFF && info.Snd_ssthresh != 0 {
		w(" ssthresh:", d(info.Snd_ssthresh))
	}
	if info.Bytes_sent != 0 {
		w(" bytes_sent:", ull(info.Bytes_sent))
	}
	if info.Bytes_retrans != 0 {
		w(" bytes_retrans:", ull(info.Bytes_retrans))
	}
	if info.Bytes_acked != 0 {
		w(" bytes_acked:", ull(info.Bytes_acked))
	}
	if info.Bytes_received != 0 {
		w(" bytes_received:", ull(info.Bytes_received))
	}
	if info.Segs_out != 0 {
		w(" segs_out:", u(info.Segs_out))
	}
	if info.Segs_in != 0 {
		w(" segs_in:", u(info.Segs_in))
	}
	if info.Data_segs_out != 0 {
		w(" data_segs_out:", u(info.Data_segs_out))
	}
	if info.Data_segs_in != 0 {
		w(" data_segs_in:", u(info.Data_segs_in))
	}
	if dc := ti.DCTCP; dc != nil {
		if dc.Enabled != 0 {
			w(" dctcp:(ce_state:", u(uint32(dc.Ce_state)), ",alpha:", u(dc.Alpha),
				",ab_ecn:", u(dc.Ab_ecn), ",ab_tot:", u(dc.Ab_tot), ")")
		} else {
			w(" dctcp:fallback_mode")
		}
	}
	if bbr := ti.BBR; bbr != nil {
		bw := uint64(bbr.Bw_hi)<<32 | uint64(bbr.Bw_lo)
		w(" bbr:(bw:", SprintBW(float64(bw)*8.0, numeric), "bps,mrtt:", cG(float64(bbr.Min_rtt)/1000.0))
		if bbr.Pacing_gain != 0 {
			w(",pacing_gain:", cG(float64(bbr.Pacing_gain)/256.0))
		}
		if bbr.Cwnd_gain != 0 {
			w(",cwnd_gain:", cG(float64(bbr.Cwnd_gain)/256.0))
		}
		w(")")
	}
	rtt := float64(info.Rtt)
	if v := ti.Vegas; v != nil && v.Enabled != 0 && v.Rtt != 0 && v.Rtt != 0x7fffffff {
		rtt = float64(v.Rtt)
	}
	if rtt > 0 && info.Snd_mss != 0 && info.Snd_cwnd != 0 {
		send := float64(info.Snd_cwnd) * float64(info.Snd_mss) * 8000000. / rtt
		w(" send ", SprintBW(send, numeric), "bps")
	}
	if info.Last_data_sent != 0 {
		w(" lastsnd:", u(info.Last_data_sent))
	}
	if info.Last_data_recv != 0 {
		w(" lastrcv:", u(info.Last_data_recv))
	}
	if info.Last_ack_recv != 0 {
		w(" lastack:", u(info.Last_ack_recv))
	}
	if info.Pacing_rate != 0 && info.Pacing_rate != ^uint64(0) {
		w(" pacing_rate ", SprintBW(float64(info.Pacing_rate)*8., numeric), "bps")
		if info.Max_pacing_rate != 0 && info.Max_pacing_rate != ^uint64(0) {
			w("/", SprintBW(float64(info.Max_pacing_rate)*8., numeric), "bps")
		}
	}
	if info.Delivery_rate != 0 {
		w(" delivery_rate ", SprintBW(float64(info.Delivery_rate)*8., numeric), "bps")
	}
	if info.Delivered != 0 {
		w(" delivered:", u(info.Delivered))
	}
	if info.Delivered_ce != 0 {
		w(" delivered_ce:", u(info.Delivered_ce))
	}
	if appLimited {
		w(" app_limited")
	}
	if info.Busy_time != 0 {
		w(" busy:", ull(info.Busy_time/1000), "ms")
		if info.Rwnd_limited != 0 {
			w(" rwnd_limited:", ull(info.Rwnd_limited/1000), "ms(",
				strconv.FormatFloat(100.0*float64(info.Rwnd_limited)/float64(info.Busy_time), 'f', 1, 64), "%)")
		}
		if info.Sndbuf_limited != 0 {
			w(" sndbuf_limited:", ull(info.Sndbuf_limited/1000), "ms(",
				strconv.FormatFloat(100.0*float64(info.Sndbuf_limited)/float64(info.Busy_time), 'f', 1, 64), "%)")
		}
	}
	if info.Unacked != 0 {
		w(" unacked:", u(info.Unacked))
	}
	if info.Retrans != 0 || info.Total_retrans != 0 {
		w(" retrans:", u(info.Retrans), "/", u(info.Total_retrans))
	}
	if info.Lost != 0 {
		w(" lost:", u(info.Lost))
	}
	if info.Sacked != 0 && state != sock.Listen {
		w(" sacked:", u(info.Sacked))
	}
	if info.Dsack_dups != 0 {
		w(" dsack_dups:", u(info.Dsack_dups))
	}
	if info.Fackets != 0 {
		w(" fackets:", u(info.Fackets))
	}
	if info.Reordering != 3 {
		w(" reordering:", d(info.Reordering))
	}
	if info.Reord_seen != 0 {
		w(" reord_seen:", d(info.Reord_seen))
	}
	if info.Rcv_rtt != 0 {
		w(" rcv_rtt:", ms(info.Rcv_rtt))
	}
	if info.Rcv_space != 0 {
		w(" rcv_space:", d(info.Rcv_space))
	}
	if info.Rcv_ssthresh != 0 {
		w(" rcv_ssthresh:", u(info.Rcv_ssthresh))
	}
	if info.Notsent_bytes != 0 {
		w(" notsent:", u(info.Notsent_bytes))
	}
	if info.Min_rtt != 0 && info.Min_rtt != ^uint32(0) {
		w(" minrtt:", ms(info.Min_rtt))
	}
	if info.Rcv_ooopack != 0 {
		w(" rcv_ooopack:", u(info.Rcv_ooopack))
	}
	if info.Snd_wnd != 0 {
		w(" snd_wnd:", u(info.Snd_wnd))
	}
	w(md5String(ti.MD5Keys))
	w(ULPString(ti.ULP))
	return b.String()
}

// md5String formats the TCP-MD5 keys as ss -i prints them after the TCP
// details: ` md5keys:ADDR/PREFIX=KEY,...`, the key's bytes as they are
// but for unprintable ones, backslashes, spaces and commas, written \ooo.
// (ss 6.1 writes the keys themselves with printf, past its buffered
// output, so they land before its header; sstrace writes them here, where
// later ss versions do.)
func md5String(keys []sock.MD5Key) string {
	if len(keys) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(" md5keys:")
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k.Prefix.Addr().String())
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(k.Prefix.Bits()))
		b.WriteByte('=')
		for _, c := range k.Key {
			if c >= 0x20 && c < 0x7f && c != '\\' && c != ' ' && c != ',' {
				b.WriteByte(c)
			} else {
				fmt.Fprintf(&b, "\\%03o", c)
			}
		}
	}
	return b.String()
}

// ULPString formats INET_DIAG_ULP_INFO as ss -i ends its TCP details:
// ` tcp-ulp-tls version: 1.3 cipher: aes-gcm-256 rxconf: sw txconf: sw`, or
// an MPTCP subflow's ` tcp-ulp-mptcp flags:Mmec token:...`; nil gives "".
func ULPString(u *sock.ULPInfo) string {
	if u == nil {
		return ""
	}
	var b strings.Builder
	if u.Name != "" {
		b.WriteString(" tcp-ulp-" + u.Name)
	}
	if m := u.MPTCP; m != nil {
		mptcpSubflow(&b, m)
	}
	t := u.TLS
	if t == nil {
		return b.String()
	}
	has := func(attr int) bool { return t.Has&(1<<attr) != 0 }
	if has(tlsInfoVersion) {
		switch t.Version {
		case tls12:
			b.WriteString(" version: 1.2")
		case tls13:
			b.WriteString(" version: 1.3")
		default:
			b.WriteString(" version: unknown(" + strconv.Itoa(int(t.Version)) + ")")
		}
	}
	if has(tlsInfoCipher) {
		// ss 6.1 names these two and prints nothing for the others.
		switch t.Cipher {
		case tlsCipherAESGCM128:
			b.WriteString(" cipher: aes-gcm-128")
		case tlsCipherAESGCM256:
			b.WriteString(" cipher: aes-gcm-256")
		}
	}
	conf := func(name string, v uint16) {
		b.WriteString(" " + name + ": ")
		switch v {
		case 1:
			b.WriteString("none")
		case 2:
			b.WriteString("sw")
		case 3:
			b.WriteString("hw")
		case 4:
			b.WriteString("hw-record")
		default:
			b.WriteString("unknown(" + strconv.Itoa(int(v)) + ")")
		}
	}
	if has(tlsInfoRXConf) {
		conf("rxconf", t.RXConf)
	}
	if has(tlsInfoTXConf) {
		conf("txconf", t.TXConf)
	}
	if t.ZeroCopyTX {
		b.WriteString(" zc_ro_tx")
	}
	return b.String()
}

// kTLS's attribute numbers and versions (include/uapi/linux/tls.h).
const (
	tlsInfoVersion = 1
	tlsInfoCipher  = 2
	tlsInfoTXConf  = 3
	tlsInfoRXConf  = 4
	tls12          = 0x0303
	tls13          = 0x0304
	// TLS_CIPHER_AES_GCM_128 and _256.
	tlsCipherAESGCM128 = 51
	tlsCipherAESGCM256 = 52
)

// mptcpSubflow writes an MPTCP subflow's state as ss 6.1 does (its
// sequence numbers in hex; later versions print them in decimal).
func mptcpSubflow(b *strings.Builder, m *sock.MPTCPSubflow) {
	has := func(attr int) bool { return m.Has&(1<<attr) != 0 }
	if has(sock.MPTCPSubflowFlags) && m.Flags != 0 {
		b.WriteString(" flags:")
		for i, c := range "MmJjBbecv" { // MPTCP_SUBFLOW_FLAG_MCAP_REM (bit 0) ... MAPVALID (bit 8)
			if m.Flags&(1<<i) != 0 {
				b.WriteRune(c)
			}
		}
	}
	if has(sock.MPTCPSubflowTokenRem) && has(sock.MPTCPSubflowTokenLoc) && has(sock.MPTCPSubflowIDRem) && has(sock.MPTCPSubflowIDLoc) {
		fmt.Fprintf(b, " token:%04x(id:%d)/%04x(id:%d)", m.TokenRem, m.IDRem, m.TokenLoc, m.IDLoc)
	}
	if has(sock.MPTCPSubflowMapSeq) {
		fmt.Fprintf(b, " seq:%x", m.MapSeq)
	}
	if has(sock.MPTCPSubflowMapSfseq) {
		fmt.Fprintf(b, " sfseq:%x", m.MapSfseq)
	}
	if has(sock.MPTCPSubflowSsnOffset) {
		fmt.Fprintf(b, " ssnoff:%x", m.SsnOffset)
	}
	if has(sock.MPTCPSubflowMapDatalen) {
		fmt.Fprintf(b, " maplen:%x", m.MapDatalen)
	}
}

// MPTCPInfoString formats an MPTCP socket's mptcp_info as ss 6.1's -i does
// (mptcp_stats_print: the counters that are not zero, the sequence numbers
// in hex).
func MPTCPInfoString(m *sock.MPTCPInfo) string {
	var b strings.Builder
	u8 := func(name string, v uint8) {
		if v != 0 {
			fmt.Fprintf(&b, " %s:%d", name, v)
		}
	}
	u8("subflows", m.Subflows)
	u8("add_addr_signal", m.AddAddrSignal)
	u8("add_addr_accepted", m.AddAddrAccepted)
	u8("subflows_max", m.SubflowsMax)
	u8("add_addr_signal_max", m.AddAddrSignalMax)
	u8("add_addr_accepted_max", m.AddAddrAcceptedMax)
	if m.Flags&1 != 0 { // MPTCP_INFO_FLAG_FALLBACK
		b.WriteString(" fallback")
	}
	if m.Flags&2 != 0 { // MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED
		b.WriteString(" remote_key")
	}
	if m.Token != 0 {
		fmt.Fprintf(&b, " token:%x", m.Token)
	}
	if m.WriteSeq != 0 {
		fmt.Fprintf(&b, " write_seq:%x", m.WriteSeq)
	}
	if m.SndUna != 0 {
		fmt.Fprintf(&b, " snd_una:%x", m.SndUna)
	}
	if m.RcvNxt != 0 {
		fmt.Fprintf(&b, " rcv_nxt:%x", m.RcvNxt)
	}
	return b.String()
}
