package ssfmt

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// JSONTCPInfo is the "tcp_info" object: an ordered list of keys, so that
// the output keeps the kernel's field order and leaves out the fields the
// kernel did not send.
type JSONTCPInfo struct {
	keys []string
	vals []any
}

func (o *JSONTCPInfo) add(k string, v any) {
	o.keys = append(o.keys, k)
	o.vals = append(o.vals, v)
}

// Get returns the value stored under key, for tests and callers that
// want one field.
func (o *JSONTCPInfo) Get(key string) (any, bool) {
	for i, k := range o.keys {
		if k == key {
			return o.vals[i], true
		}
	}
	return nil, false
}

// MarshalJSON writes the keys in order.
func (o *JSONTCPInfo) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(k))
		b.WriteByte(':')
		v, err := json.Marshal(o.vals[i])
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func tcpInfoJSON(ti *sock.TCPInfo) *JSONTCPInfo {
	info := visibleInfo(ti)
	n := ti.Len
	if n <= 0 || n > unix.SizeofTCPInfo {
		n = unix.SizeofTCPInfo
	}
	o := &JSONTCPInfo{}
	// has reports whether a field ending at off+size was sent.
	has := func(off, size uintptr) bool { return int(off+size) <= n }
	i := &info
	add := func(k string, off, size uintptr, v any) {
		if has(off, size) {
			o.add(k, v)
		}
	}
	add("state", unsafe.Offsetof(i.State), 1, i.State)
	add("ca_state", unsafe.Offsetof(i.Ca_state), 1, i.Ca_state)
	add("retransmits", unsafe.Offsetof(i.Retransmits), 1, i.Retransmits)
	add("probes", unsafe.Offsetof(i.Probes), 1, i.Probes)
	add("backoff", unsafe.Offsetof(i.Backoff), 1, i.Backoff)
	add("options", unsafe.Offsetof(i.Options), 1, i.Options)
	snd, rcv, appLimited := ti.SndWscale, ti.RcvWscale, ti.DeliveryRateAppLimited
	add("snd_wscale", offWscale, 1, snd)
	add("rcv_wscale", offWscale, 1, rcv)
	add("delivery_rate_app_limited", offAppLimited, 1, appLimited)
	u32 := func(k string, p *uint32) { add(k, uintptr(unsafe.Pointer(p))-uintptr(unsafe.Pointer(i)), 4, *p) }
	u64 := func(k string, p *uint64) { add(k, uintptr(unsafe.Pointer(p))-uintptr(unsafe.Pointer(i)), 8, *p) }
	u32("rto_us", &i.Rto)
	u32("ato_us", &i.Ato)
	u32("snd_mss", &i.Snd_mss)
	u32("rcv_mss", &i.Rcv_mss)
	u32("unacked", &i.Unacked)
	u32("sacked", &i.Sacked)
	u32("lost", &i.Lost)
	u32("retrans", &i.Retrans)
	u32("fackets", &i.Fackets)
	u32("last_data_sent_ms", &i.Last_data_sent)
	u32("last_ack_sent_ms", &i.Last_ack_sent)
	u32("last_data_recv_ms", &i.Last_data_recv)
	u32("last_ack_recv_ms", &i.Last_ack_recv)
	u32("pmtu", &i.Pmtu)
	u32("rcv_ssthresh", &i.Rcv_ssthresh)
	u32("rtt_us", &i.Rtt)
	u32("rttvar_us", &i.Rttvar)
	u32("snd_ssthresh", &i.Snd_ssthresh)
	u32("snd_cwnd", &i.Snd_cwnd)
	u32("advmss", &i.Advmss)
	u32("reordering", &i.Reordering)
	u32("rcv_rtt_us", &i.Rcv_rtt)
	u32("rcv_space", &i.Rcv_space)
	u32("total_retrans", &i.Total_retrans)
	u64("pacing_rate_Bps", &i.Pacing_rate)
	u64("max_pacing_rate_Bps", &i.Max_pacing_rate)
	u64("bytes_acked", &i.Bytes_acked)
	u64("bytes_received", &i.Bytes_received)
	u32("segs_out", &i.Segs_out)
	u32("segs_in", &i.Segs_in)
	u32("notsent_bytes", &i.Notsent_bytes)
	u32("min_rtt_us", &i.Min_rtt)
	u32("data_segs_in", &i.Data_segs_in)
	u32("data_segs_out", &i.Data_segs_out)
	u64("delivery_rate_Bps", &i.Delivery_rate)
	u64("busy_time_us", &i.Busy_time)
	u64("rwnd_limited_us", &i.Rwnd_limited)
	u64("sndbuf_limited_us", &i.Sndbuf_limited)
	u32("delivered", &i.Delivered)
	u32("delivered_ce", &i.Delivered_ce)
	u64("bytes_sent", &i.Bytes_sent)
	u64("bytes_retrans", &i.Bytes_retrans)
	u32("dsack_dups", &i.Dsack_dups)
	u32("reord_seen", &i.Reord_seen)
	u32("rcv_ooopack", &i.Rcv_ooopack)
	u32("snd_wnd", &i.Snd_wnd)
	if ti.Congestion != "" {
		o.add("congestion", ti.Congestion)
	}
	if b := ti.BBR; b != nil {
		o.add("bbr", map[string]any{
			"bw_Bps":      uint64(b.Bw_hi)<<32 | uint64(b.Bw_lo),
			"min_rtt_us":  b.Min_rtt,
			"pacing_gain": b.Pacing_gain,
			"cwnd_gain":   b.Cwnd_gain,
		})
	}
	if d := ti.DCTCP; d != nil {
		o.add("dctcp", map[string]any{
			"enabled": d.Enabled != 0, "ce_state": d.Ce_state, "alpha": d.Alpha,
			"ab_ecn": d.Ab_ecn, "ab_tot": d.Ab_tot,
		})
	}
	if v := ti.Vegas; v != nil {
		o.add("vegas", map[string]any{
			"enabled": v.Enabled != 0, "rtt_cnt": v.Rttcnt, "rtt_us": v.Rtt, "min_rtt_us": v.Minrtt,
		})
	}
	return o
}
