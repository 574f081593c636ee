package eventfmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

func sample() event.Event {
	return event.Event{
		Time: time.Date(2026, 11, 25, 12, 0, 1, 5, time.UTC), Mono: 1000,
		Cookie: 18446744073709551615, CookieSource: event.CookieHelper, Sock: 1,
		NetNS: 4026531840, Family: unix.AF_INET6,
		Local: netip.MustParseAddrPort("[::1]:8080"), Peer: netip.MustParseAddrPort("[2001:db8::2]:443"),
		OldState: sock.SynSent, NewState: sock.Established,
		Task: event.Task{PID: 7, TID: 8, UID: 0, Comm: "we\"ird\\\x01é\xff"}, CgroupID: 9,
		Owner:   event.Owner{PID: 7, UID: 0, Comm: "we\"ird\\\x01é\xff"},
		Context: event.ContextProcess, Hook: event.HookTPBTF, CPU: 1,
	}
}

func TestAppendJSONKeysAndValues(t *testing.T) {
	e := sample()
	var j JSON
	line := j.Append(nil, &e)
	if !bytes.HasSuffix(line, []byte("}\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", line)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		t.Fatalf("not an object: %q", line)
	}
	var keys []string
	vals := map[string]any{}
	for dec.More() {
		k, _ := dec.Token()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("invalid JSON %q: %v", line, err)
		}
		keys = append(keys, k.(string))
		vals[k.(string)] = v
	}
	want := "time cookie netns family saddr sport daddr dport oldstate newstate pid comm uid context task_pid task_tid task_uid task_comm task_cgroup hook cookie_source cpu"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("keys\n %s\nwant\n %s", got, want)
	}
	for k, v := range map[string]string{
		"time": "2026-11-25T12:00:01.000000005Z", "cookie": "18446744073709551615", "family": "inet6",
		"saddr": "::1", "sport": "8080", "daddr": "2001:db8::2", "dport": "443",
		"oldstate": "SYN_SENT", "newstate": "ESTABLISHED", "pid": "7", "comm": "we\"ird\\\x01é\ufffd",
		"context": "process", "hook": "tp_btf", "cookie_source": "helper",
	} {
		if got := fmt.Sprint(vals[k]); got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
}

// TestJSONAddressCache formats more distinct addresses than the cache holds,
// twice over, and checks every line against the address's own text.
func TestJSONAddressCache(t *testing.T) {
	var j JSON
	e := sample()
	for round := 0; round < 2; round++ {
		for i := 0; i < 20; i++ {
			local := netip.AddrFrom4([4]byte{10, 0, byte(i), 1})
			peer := netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i%3))
			e.Local = netip.AddrPortFrom(local, 1)
			e.Peer = netip.AddrPortFrom(peer, 2)
			line := string(j.Append(nil, &e))
			if !strings.Contains(line, `"saddr":"`+local.String()+`"`) || !strings.Contains(line, `"daddr":"`+peer.String()+`"`) {
				t.Fatalf("round %d, %d: %s", round, i, line)
			}
		}
	}
}

// TestJSONTimeAcrossMinutes checks the cached minute prefix against a full
// formatting, across minute, hour and year boundaries.
func TestJSONTimeAcrossMinutes(t *testing.T) {
	var j JSON
	e := sample()
	base := time.Date(2026, 12, 31, 23, 58, 59, 999999999, time.UTC)
	for _, d := range []time.Duration{0, 1, time.Second, time.Minute, 61 * time.Second, 2 * time.Minute, time.Hour, -3 * time.Minute} {
		e.Time = base.Add(d)
		line := string(j.Append(nil, &e))
		want := `{"time":"` + e.Time.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") + `"`
		if !strings.HasPrefix(line, want) {
			t.Errorf("%v: %s, want prefix %s", e.Time, line[:40], want)
		}
	}
}

// TestJSONSoftirqNamesOwnerNotTask: a softirq transition carries the
// socket's owner in pid/comm/uid and no task keys; a CLOSE carries the
// final counters.
func TestJSONSoftirqNamesOwnerNotTask(t *testing.T) {
	e := sample()
	e.Context = event.ContextSoftirq
	e.Task = event.Task{PID: 999, TID: 999, Comm: "bystander"}
	e.Owner = event.Owner{PID: 42, UID: 1000, Comm: "server"}
	e.OldState, e.NewState = sock.Established, sock.Close
	e.InState = 1500 * time.Microsecond
	e.Final = event.Final{BytesAcked: 10, BytesReceived: 20, Retrans: 1, SRTT: 40 * time.Microsecond, Err: uint16(unix.ECONNRESET)}
	var j JSON
	var v map[string]any
	line := j.Append(nil, &e)
	if err := json.Unmarshal(line, &v); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	if v["pid"] != 42.0 || v["comm"] != "server" || v["uid"] != 1000.0 {
		t.Errorf("owner keys: %s", line)
	}
	for _, k := range []string{"task_pid", "task_tid", "task_comm", "task_uid", "task_cgroup"} {
		if _, ok := v[k]; ok {
			t.Errorf("softirq event has %s: %s", k, line)
		}
	}
	if v["in_state_ms"] != 1.5 || v["bytes_sent"] != 10.0 || v["bytes_received"] != 20.0 || v["rtt_us"] != 40.0 || v["err"] != "ECONNRESET" {
		t.Errorf("in_state/final keys: %s", line)
	}
}

func TestTextShowsOwnerAndDuration(t *testing.T) {
	tx := NewText()
	e := sample()
	e.Family = unix.AF_INET
	e.Local = netip.MustParseAddrPort("127.0.0.1:80")
	e.Peer = netip.MustParseAddrPort("127.0.0.1:5555")
	first := string(tx.Append(nil, &e))
	if !strings.Contains(first, " 7 ") || !strings.Contains(first, "127.0.0.1:80") || !strings.HasSuffix(first, " 0.000\n") {
		t.Errorf("first line %q", first)
	}
	e.OldState, e.NewState = sock.Established, sock.CloseWait
	e.InState = 2500 * time.Microsecond
	e.Context = event.ContextSoftirq
	e.Task = event.Task{PID: 999, Comm: "bystander"}
	second := string(tx.Append(nil, &e))
	fields := strings.Fields(second)
	if fields[1] != "7" {
		t.Errorf("softirq line does not show the owner: %q", second)
	}
	e.Owner = event.Owner{}
	fields = strings.Fields(string(tx.Append(nil, &e)))
	if fields[1] != "-" || fields[2] != "-" {
		t.Errorf("unknown owner not shown as -: %q", fields)
	}
	if fields[len(fields)-1] != "2.500" {
		t.Errorf("ms in old state: %q, want 2.500", second)
	}
}

// TestTextEscapesComm: a comm with a newline and a terminal escape (any
// process can name itself so) stays on its line and reaches the terminal
// escaped; the columns after it stay in place.
func TestTextEscapesComm(t *testing.T) {
	tx := NewText()
	e := sample()
	e.Family = unix.AF_INET
	e.Local = netip.MustParseAddrPort("127.0.0.1:80")
	e.Peer = netip.MustParseAddrPort("127.0.0.1:5555")
	e.Owner.Comm = "x\n\x1b[31mZ"
	line := string(tx.Append(nil, &e))
	if strings.Count(line, "\n") != 1 || strings.ContainsAny(line, "\x1b\r") {
		t.Fatalf("raw control bytes in %q", line)
	}
	if fields := strings.Fields(line); len(fields) < 4 || fields[2] != `x\n\x1b[31mZ` || fields[3] != "127.0.0.1:80" {
		t.Errorf("line %q: want the comm escaped as x\\n\\x1b[31mZ in its column", line)
	}
	e.Owner.Comm = "plain"
	plain := string(tx.Append(nil, &e))
	if i, j := strings.Index(line, "127.0.0.1:80"), strings.Index(plain, "127.0.0.1:80"); i != j {
		t.Errorf("address column at %d after an escaped comm, %d after a plain one", i, j)
	}
}

// TestAppendEscaped: the escapes are strconv.Quote's (without the quotes,
// and " kept), for every single byte, runes that are not printable, and
// invalid UTF-8; nothing a terminal acts on is left.
func TestAppendEscaped(t *testing.T) {
	var inputs []string
	for c := 0; c < 256; c++ {
		inputs = append(inputs, string([]byte{byte(c)}), "a"+string([]byte{byte(c)})+"b")
	}
	inputs = append(inputs, "", "curl", "x\n\x1b[31mZ", `back\slash "q"`, "é", "日本語",
		"\u0085", "\u009b[31m", "\u202eevil", "\U000e0001", "\U0001f600", "\xc3", "\xed\xa0\x80", "we\"ird\\\x01é\xff")
	for _, s := range inputs {
		q := strconv.Quote(s)
		want := strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`)
		if got := string(AppendEscaped(nil, s)); got != want {
			t.Errorf("AppendEscaped(%q) = %q, want %q", s, got, want)
		}
		if got := string(AppendEscaped([]byte("p:"), []byte(s))); got != "p:"+want {
			t.Errorf("AppendEscaped([]byte %q) = %q, want %q", s, got, "p:"+want)
		}
		for _, r := range string(AppendEscaped(nil, s)) {
			if r < 0x20 || (r >= 0x7f && r < 0xa0) || r == 0x202e {
				t.Errorf("AppendEscaped(%q) left %U", s, r)
			}
		}
	}
}

func BenchmarkAppendText(b *testing.B) {
	e := sample()
	e.Owner.Comm = "churn"
	buf := make([]byte, 0, 512)
	tx := NewText()
	b.ReportAllocs()
	for b.Loop() {
		buf = tx.Append(buf[:0], &e)
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	e := sample()
	e.Owner.Comm = "churn"
	var buf []byte
	var j JSON
	b.ReportAllocs()
	for b.Loop() {
		buf = j.Append(buf[:0], &e)
	}
}

// TestMinisocketFollows: the transition to CLOSE that hands the connection
// to a TIME-WAIT (or orphaned FIN-WAIT-2) minisocket says so, in JSON and in
// text; an abort (a socket error) and other closes say nothing.
func TestMinisocketFollows(t *testing.T) {
	for _, tc := range []struct {
		old             sock.State
		fin             event.Final
		state, textMark string
	}{
		{sock.FinWait2, event.Final{PeerFIN: true}, "TIME_WAIT", "(TIME_WAIT follows)"},
		{sock.Closing, event.Final{}, "TIME_WAIT", "(TIME_WAIT follows)"},
		{sock.FinWait2, event.Final{}, "FIN_WAIT2", "(orphaned FIN_WAIT2 follows)"},
		{sock.FinWait2, event.Final{Err: uint16(unix.ECONNRESET)}, "", ""},
		{sock.LastAck, event.Final{}, "", ""},
	} {
		e := sample()
		e.OldState, e.NewState, e.Final = tc.old, sock.Close, tc.fin
		var j JSON
		line := string(j.Append(nil, &e))
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if got, _ := m["minisocket_state"].(string); got != tc.state || (tc.state != "") != (m["minisocket"] == true) {
			t.Errorf("%s -> CLOSE %+v: JSON %s", tc.old, tc.fin, line)
		}
		var txt Text
		text := string(txt.Append(nil, &e))
		if tc.textMark != "" && !strings.Contains(text, tc.textMark) || tc.textMark == "" && strings.Contains(text, "follows") {
			t.Errorf("%s -> CLOSE %+v: text %q", tc.old, tc.fin, text)
		}
	}
}

// TestTextExtended: -e adds the cookie and the namespace inode as columns
// under their headers; without it the line is unchanged.
func TestTextExtended(t *testing.T) {
	e := sample()
	e.Owner.Comm = "curl" // fits its column, so the columns line up
	plain := string((&Text{}).Append(nil, &e))
	ext := &Text{Extended: true}
	line := string(ext.Append(nil, &e))
	if !strings.HasPrefix(line, strings.TrimRight(plain, "\n")) {
		t.Errorf("extended line does not extend the plain one:\n%q\n%q", plain, line)
	}
	h := ext.Header()
	for col, want := range map[string]string{"COOKIE": "18446744073709551615", "NETNS": "4026531840"} {
		i := strings.Index(h, col)
		if i < 0 || i+len(want) > len(line) || line[i:i+len(want)] != want {
			t.Errorf("column %s: header %q line %q", col, h, line)
		}
	}
	if (&Text{}).Header() != TextHeader {
		t.Error("plain header changed")
	}
}
