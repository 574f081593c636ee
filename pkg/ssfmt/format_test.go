package ssfmt

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/sock"
)

// Expected values below are what glibc printed for the same inputs
// (printf, inet_ntop), on this machine, when the tests were written.

func TestCFormatG(t *testing.T) {
	cases := []struct {
		v         float64
		g, g3, f0 string
	}{
		{0, "0", "0", "0"},
		{0.03, "0.03", "0.03", "0"},
		{2.88671875, "2.88672", "2.89", "3"},
		{1, "1", "1", "1"},
		{1e6, "1e+06", "1e+06", "1000000"},
		{123456, "123456", "1.23e+05", "123456"},
		{1234567, "1.23457e+06", "1.23e+06", "1234567"},
		{0.0001, "0.0001", "0.0001", "0"},
		{0.00001234, "1.234e-05", "1.23e-05", "0"},
		{18841598872, "1.88416e+10", "1.88e+10", "18841598872"},
		{87381333333.3, "8.73813e+10", "8.74e+10", "87381333333"},
		{999999.5, "1e+06", "1e+06", "1000000"},
		{100.25, "100.25", "100", "100"},
		{2.5, "2.5", "2.5", "2"},
		{0.5, "0.5", "0.5", "0"},
	}
	for _, c := range cases {
		if got := CFormatG(c.v, 6); got != c.g {
			t.Errorf("%%g of %v = %q, want %q", c.v, got, c.g)
		}
		if got := CFormatG(c.v, 3); got != c.g3 {
			t.Errorf("%%.3g of %v = %q, want %q", c.v, got, c.g3)
		}
		if got := SprintBW(c.v, true); got != c.f0 {
			t.Errorf("%%.0f of %v = %q, want %q", c.v, got, c.f0)
		}
	}
}

func TestSprintBW(t *testing.T) {
	cases := map[float64]string{
		0: "0", 999: "999", 1000: "1k", 87381333333.3: "87.4G", 249722865112: "250G",
		1.5e12: "1.5T", 18841600000: "18.8G", 2500000: "2.5M",
	}
	for v, want := range cases {
		if got := SprintBW(v, false); got != want {
			t.Errorf("SprintBW(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestNtoP6(t *testing.T) {
	cases := map[string]string{
		"::2": "::2", "::1": "::1", "::": "::", "::1.2.3.4": "::1.2.3.4",
		"::ffff:1.2.3.4": "::ffff:1.2.3.4", "::ffff:0:1.2.3.4": "::ffff:0:102:304",
		"1:0:0:1:0:0:0:1": "1:0:0:1::1", "1:0:1:0:1:0:1:0": "1:0:1:0:1:0:1:0",
		"fe80::1": "fe80::1", "0:0:0:0:0:1:0:0": "::1:0:0", "::0.1.0.0": "::0.1.0.0", "1::": "1::",
	}
	for in, want := range cases {
		a := netip.MustParseAddr(in)
		if got := NtoP6(a.As16()); got != want {
			t.Errorf("NtoP6(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestMsTimer(t *testing.T) {
	cases := map[uint32]string{
		0: "", 5: "005ms", 648: "648ms", 1500: "1.500ms", 8192: "8.192ms", 9999: "9.999ms",
		10500: "10sec", 42000: "42sec", 60000: "1min", 61500: "1min1sec", 118000: "1min58sec",
		599000: "9min59sec", 600000: "10min", 7140000: "119min",
	}
	for in, want := range cases {
		if got := MsTimer(in); got != want {
			t.Errorf("MsTimer(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestTimerString(t *testing.T) {
	cases := []struct {
		tm   sock.Timer
		want string
	}{
		{sock.Timer{}, ""},
		{sock.Timer{Kind: 1, Expires: 456 * time.Millisecond, Retrans: 5}, " timer:(on,456ms,5)"},
		{sock.Timer{Kind: 2, Expires: 119 * time.Minute}, " timer:(keepalive,119min,0)"},
		{sock.Timer{Kind: 3, Expires: 42 * time.Second}, " timer:(timewait,42sec,0)"},
		{sock.Timer{Kind: 4, Expires: 200 * time.Millisecond, Retrans: 2}, " timer:(persist,200ms,2)"},
		{sock.Timer{Kind: 9, Expires: -time.Second}, " timer:(unknown,,0)"},
	}
	for _, c := range cases {
		if got := TimerString(c.tm); got != c.want {
			t.Errorf("TimerString(%+v) = %q, want %q", c.tm, got, c.want)
		}
	}
}

func TestShutdownString(t *testing.T) {
	for mask, want := range map[uint8]string{0: "<->", 1: "-->", 2: "<--", 3: "---"} {
		if got := ShutdownString(mask); got != want {
			t.Errorf("ShutdownString(%d) = %q, want %q", mask, got, want)
		}
	}
}

func TestUsersString(t *testing.T) {
	got := UsersString([]sock.Process{{Comm: "python3", PID: 9897, FD: 6}, {Comm: "sshd", PID: 1, FD: 3}}, false)
	want := ` users:(("python3",pid=9897,fd=6),("sshd",pid=1,fd=3))`
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestULPString checks -i's tcp-ulp words against ss 6.1's tcp_show_info
// (misc/ss.c: tcp_tls_version, tcp_tls_cipher, tcp_tls_conf in rxconf,
// txconf order, tcp_tls_zc_sendfile).
func TestULPString(t *testing.T) {
	all := uint32(0b111110)
	cases := []struct {
		u    *sock.ULPInfo
		want string
	}{
		{nil, ""},
		{&sock.ULPInfo{Name: "mptcp"}, " tcp-ulp-mptcp"},
		{&sock.ULPInfo{Name: "tls", TLS: &sock.TLSInfo{Version: 0x0303, Cipher: 51, TXConf: 2, RXConf: 2, Has: all &^ (1 << 5)}},
			" tcp-ulp-tls version: 1.2 cipher: aes-gcm-128 rxconf: sw txconf: sw"},
		{&sock.ULPInfo{Name: "tls", TLS: &sock.TLSInfo{Version: 0x0304, Cipher: 52, TXConf: 3, RXConf: 1, ZeroCopyTX: true, Has: all}},
			" tcp-ulp-tls version: 1.3 cipher: aes-gcm-256 rxconf: none txconf: hw zc_ro_tx"},
		{&sock.ULPInfo{Name: "tls", TLS: &sock.TLSInfo{Version: 9, Cipher: 53, TXConf: 4, RXConf: 7, Has: all}},
			" tcp-ulp-tls version: unknown(9) rxconf: unknown(7) txconf: hw-record"},
	}
	for _, c := range cases {
		if got := ULPString(c.u); got != c.want {
			t.Errorf("ULPString(%+v) = %q, want %q", c.u, got, c.want)
		}
	}
}
