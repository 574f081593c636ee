package ssquery

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
)

// TestSelection checks ss's defaults and the command-line-order rules on a
// few option sequences (each a function applying flags in order).
func TestSelection(t *testing.T) {
	cases := []struct {
		name   string
		apply  func(*Selection) error
		tables uint32
		states sock.StateSet
		inet   []uint8
		netid  bool
	}{
		{"none", func(*Selection) error { return nil },
			1<<TCP | 1<<MPTCP | 1<<DCCP | 1<<UDP | 1<<RAW | unixTables | packetTables | 1<<Netlink | 1<<SCTP | vsockTables | 1<<XDP,
			ssConnStates, []uint8{afInet, afInet6}, true},
		{"-t", func(s *Selection) error { s.Table(TCP); return nil },
			1 << TCP, ssConnStates, []uint8{afInet, afInet6}, false},
		{"-tl", func(s *Selection) error { s.Table(TCP); s.Listening(); return nil },
			1 << TCP, 1<<sock.Listen | 1<<sock.Close, []uint8{afInet, afInet6}, false},
		{"-la (last wins)", func(s *Selection) error { s.Listening(); s.All(); s.Table(UDP); return nil },
			1 << UDP, ssAllStates, []uint8{afInet, afInet6}, false},
		{"-6 -4 (IPv4 preferred)", func(s *Selection) error { s.Family(afInet6); s.Family(afInet); return nil },
			inetTables | 1<<RAW, ssConnStates, []uint8{afInet}, true},
		{"-6t", func(s *Selection) error { s.Family(afInet6); s.Table(TCP); return nil },
			1 << TCP, ssConnStates, []uint8{afInet6}, false},
		{"-x", func(s *Selection) error { s.Family(afUnix); return nil },
			unixTables, ssConnStates, nil, true},
		{"-t -A udp (query resets)", func(s *Selection) error { s.Table(TCP); return s.Query("udp") },
			1 << UDP, ssConnStates, []uint8{afInet, afInet6}, false},
		{"-A all,!unix", func(s *Selection) error { return s.Query("all,!unix") },
			1<<TCP | 1<<MPTCP | 1<<DCCP | 1<<UDP | 1<<RAW | packetTables | 1<<Netlink | 1<<SCTP | vsockTables | 1<<XDP,
			ssConnStates, []uint8{afInet, afInet6}, true},
		{"-M", func(s *Selection) error { s.Table(MPTCP); return nil },
			1 << MPTCP, ssConnStates, []uint8{afInet, afInet6}, false},
		{"-0", func(s *Selection) error { s.Family(unix.AF_PACKET); return nil },
			packetTables, 1 << sock.Close, nil, true},
		{"-f link", func(s *Selection) error { return s.FamilyName("link") },
			packetTables, 1 << sock.Close, nil, true},
		{"-A p_raw", func(s *Selection) error { return s.Query("p_raw") },
			1 << PacketRaw, ssConnStates, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s Selection
			if err := c.apply(&s); err != nil {
				t.Fatal(err)
			}
			s.finish()
			if s.tables != c.tables {
				t.Errorf("tables = %#x, want %#x", s.tables, c.tables)
			}
			if s.states != c.states {
				t.Errorf("states = %#x, want %#x", s.states, c.states)
			}
			if got := s.inetFamilies(); !slices.Equal(got, c.inet) {
				t.Errorf("inet families = %v, want %v", got, c.inet)
			}
			if got := s.showNetid(); got != c.netid {
				t.Errorf("showNetid = %v, want %v", got, c.netid)
			}
		})
	}
}

func TestSelectionErrors(t *testing.T) {
	var s Selection
	if err := s.Query("tcp,bogus"); err == nil || err.Error() != `"bogus" is illegal socket table id` {
		t.Errorf("Query(bogus) = %v", err)
	}
	if err := s.FamilyName("bogus"); err == nil || err.Error() != `"bogus" is invalid family` {
		t.Errorf("FamilyName(bogus) = %v", err)
	}
}

// TestRunRefusals: what Run refuses or answers with a note on stderr,
// before any source is asked.
func TestRunRefusals(t *testing.T) {
	never := sourceFunc(func(context.Context, Request, func(*sock.Socket) error) error {
		t.Error("the source was asked")
		return nil
	})
	o := Options{NetNS: "sstrace-no-such-ns"}
	err := Run(t.Context(), new(bytes.Buffer), new(bytes.Buffer), o, nil, never)
	if err == nil || err.Error() != `ss: cannot open network namespace "sstrace-no-such-ns": no such file or directory` {
		t.Errorf("-N missing: %v", err)
	}
	o = Options{}
	o.Selection.Table(TCP)
	err = Run(t.Context(), new(bytes.Buffer), new(bytes.Buffer), o, []string{"dport", "="}, never)
	if err == nil || !strings.HasPrefix(err.Error(), "ss: filter: ") {
		t.Errorf("bad filter: %v", err)
	}
	var none Options
	if err := none.Selection.Query("!tcp"); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err = Run(t.Context(), &stdout, &stderr, none, nil, never)
	if err != nil || stderr.String() != "ss: no socket tables to show with such filter.\n" || stdout.Len() != 0 {
		t.Errorf("-A '!tcp': %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
	}
	// Run works on a copy: the caller's Selection is as it left it.
	if o.Selection.states != ssConnStates || o.Selection.stateFilter != 0 {
		t.Errorf("Run changed the caller's Selection: %+v", o.Selection)
	}
}

// sourceFunc makes a function a Source.
type sourceFunc func(context.Context, Request, func(*sock.Socket) error) error

func (f sourceFunc) Dump(ctx context.Context, req Request, emit func(*sock.Socket) error) error {
	return f(ctx, req, emit)
}
