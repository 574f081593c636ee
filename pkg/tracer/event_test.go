package tracer

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

// raw encodes k the way the kernel writes it into the ring buffer.
func raw(k TracerEvent) []byte {
	b := make([]byte, eventSize)
	*(*TracerEvent)(unsafe.Pointer(&b[0])) = k
	return b
}

func comm(s string) (c [16]int8) {
	for i := 0; i < len(s) && i < 15; i++ {
		c[i] = int8(s[i])
	}
	return c
}

func TestDecodeIPv4(t *testing.T) {
	d := &decoder{monoToWall: 1_000_000_000}
	k := TracerEvent{
		TsNs: 5_000_000_123, Cookie: 42, Skaddr: 0xffff888012345678, CgroupId: 7,
		Netns: 4026531840, Pid: 100, Tid: 101, Uid: 1000,
		Sport: 8080, Dport: 443, Family: unix.AF_INET,
		Oldstate: uint8(sock.SynSent), Newstate: uint8(sock.Established),
		Context: uint8(ContextSoftirq), Hook: 2, CookieSrc: uint8(CookieDeferred), Cpu: 1,
		Comm: comm("curl"),
	}
	copy(k.Saddr[:], []byte{10, 0, 0, 1})
	copy(k.Daddr[:], []byte{192, 0, 2, 7})
	var e Event
	if !d.decode(raw(k), &e) {
		t.Fatal("decode refused a full record")
	}
	want := Event{
		Time: time.Unix(0, 6_000_000_123), Mono: 5_000_000_123,
		Cookie: 42, CookieSource: CookieDeferred, Sock: 0xffff888012345678,
		NetNS: 4026531840, Family: unix.AF_INET,
		Local: netip.MustParseAddrPort("10.0.0.1:8080"), Peer: netip.MustParseAddrPort("192.0.2.7:443"),
		OldState: sock.SynSent, NewState: sock.Established,
		PID: 100, TID: 101, UID: 1000, CgroupID: 7, Comm: "curl",
		Context: ContextSoftirq, Hook: HookTracepoint, CPU: 1,
	}
	if !e.Time.Equal(want.Time) {
		t.Errorf("time %v, want %v", e.Time, want.Time)
	}
	e.Time, want.Time = time.Time{}, time.Time{}
	if e != want {
		t.Errorf("decoded\n %+v\nwant\n %+v", e, want)
	}
}

func TestDecodeIPv6AndCommCache(t *testing.T) {
	d := &decoder{}
	k := TracerEvent{Family: unix.AF_INET6, Sport: 1, Dport: 2, Comm: comm("a-very-long-comm-name")}
	local := netip.MustParseAddr("2001:db8::1")
	peer := netip.MustParseAddr("::ffff:127.0.0.1")
	k.Saddr = local.As16()
	k.Daddr = peer.As16()
	var e Event
	d.decode(raw(k), &e)
	if e.Local != netip.AddrPortFrom(local, 1) || e.Peer != netip.AddrPortFrom(peer, 2) {
		t.Errorf("addresses %v %v", e.Local, e.Peer)
	}
	if e.Comm != "a-very-long-com" {
		t.Errorf("comm %q: the kernel keeps 15 bytes", e.Comm)
	}
	k.Comm = comm("other")
	d.decode(raw(k), &e)
	if e.Comm != "other" {
		t.Errorf("comm cache returned stale %q", e.Comm)
	}
}

func TestDecodeShortRecord(t *testing.T) {
	var e Event
	if (&decoder{}).decode(make([]byte, eventSize-1), &e) {
		t.Fatal("a short record must be refused, not read past its end")
	}
}

func TestHookNames(t *testing.T) {
	for i, h := range Hooks {
		// hookByID follows enum event_hook (1-based, in Hooks order).
		if got := hookByID(uint8(i + 1)); got != h {
			t.Errorf("hookByID(%d) = %q, want %q", i+1, got, h)
		}
		if p, err := ParseHook(string(h)); err != nil || p != h {
			t.Errorf("ParseHook(%q) = %q, %v", h, p, err)
		}
	}
	if h, err := ParseHook(""); err != nil || h != HookAuto {
		t.Errorf("ParseHook(\"\") = %q, %v", h, err)
	}
	if _, err := ParseHook("uprobe"); err == nil {
		t.Error("ParseHook accepted an unknown hook")
	}
	if hookByID(0) != "" || hookByID(9) != "" {
		t.Error("hookByID accepted an unknown id")
	}
}

func TestContextAndCookieNames(t *testing.T) {
	for v, want := range map[Context]string{ContextProcess: "process", ContextSoftirq: "softirq", 0: "unknown"} {
		if v.String() != want {
			t.Errorf("Context(%d) = %q, want %q", v, v.String(), want)
		}
	}
	for v, want := range map[CookieSource]string{CookieNone: "none", CookieHelper: "helper", CookieField: "field", CookieDeferred: "deferred", 9: "unknown"} {
		if v.String() != want {
			t.Errorf("CookieSource(%d) = %q, want %q", v, v.String(), want)
		}
	}
}

func TestRingSize(t *testing.T) {
	for _, n := range []int{4096, 1 << 20, 8 << 20} {
		if err := checkRingSize(n); err != nil {
			t.Errorf("%d: %v", n, err)
		}
	}
	for _, n := range []int{0, 100, 4095, 3 << 20} {
		if err := checkRingSize(n); err == nil {
			t.Errorf("%d accepted", n)
		}
	}
}
