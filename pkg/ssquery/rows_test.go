package ssquery

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestRowsSourceSelects: RowsSource serves rows by protocol, then family in
// the request's order, then slice order, within the state set, and leaves
// its rows unchanged when emit writes to what it is given.
func TestRowsSourceSelects(t *testing.T) {
	ap := netip.MustParseAddrPort
	rows := RowsSource{
		{Proto: sock.ProtoTCP, Family: unix.AF_INET6, State: sock.Listen, Local: ap("[::1]:1")},
		{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: sock.Listen, Local: ap("127.0.0.1:2")},
		{Proto: sock.ProtoUDP, Family: unix.AF_INET, State: sock.Close, Local: ap("127.0.0.1:3")},
		{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: sock.Established, Local: ap("127.0.0.1:4")},
		{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: sock.Listen, Local: ap("127.0.0.1:5")},
		{Proto: sock.ProtoUNIX, Family: unix.AF_UNIX, State: sock.Listen, Unix: &sock.UnixInfo{Path: "/x"}},
	}
	var got []string
	emit := func(s *sock.Socket) error {
		got = append(got, s.Proto.String()+" "+s.Local.String())
		s.Procs = []sock.Process{{Comm: "x"}}
		return nil
	}
	req := Request{
		Protos:   []sock.Proto{sock.ProtoUNIX, sock.ProtoTCP},
		Families: []uint8{unix.AF_INET6, unix.AF_INET},
		States:   sock.StateSet(0).With(sock.Listen),
	}
	if err := rows.Dump(t.Context(), req, emit); err != nil {
		t.Fatal(err)
	}
	want := []string{"unix invalid AddrPort", "tcp [::1]:1", "tcp 127.0.0.1:2", "tcp 127.0.0.1:5"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("rows = %q, want %q", got, want)
	}
	for i, s := range rows {
		if s.Procs != nil {
			t.Errorf("row %d changed by emit", i)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := rows.Dump(t.Context(), req, func(*sock.Socket) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("emit error: Dump = %v after %d rows, want stop after 1", err, n)
	}
}

// TestRowsSourceLikeLive runs queries over a namespace twice, once dumping
// it live and once over a RowsSource holding a dump of every socket taken
// just before: the output must be the same. This is how a daemon's table
// snapshot will answer.
func TestRowsSourceLikeLive(t *testing.T) {
	ns := testutil.NewNS(t)
	var closers []func()
	t.Cleanup(func() {
		for _, c := range closers {
			c()
		}
	})
	dir := t.TempDir()
	err := ns.Do(func() error {
		for _, a := range [][2]string{{"tcp4", "127.0.0.1:8080"}, {"tcp6", "[::1]:8080"}, {"tcp4", "0.0.0.0:22"}} {
			l, err := net.Listen(a[0], a[1])
			if err != nil {
				return err
			}
			closers = append(closers, func() { l.Close() })
			for range 3 {
				c, err := net.Dial(a[0], l.Addr().String())
				if err != nil {
					return err
				}
				closers = append(closers, func() { c.Close() })
			}
		}
		for _, a := range [][2]string{{"udp4", "127.0.0.1:53"}, {"udp6", "[::1]:5353"}} {
			c, err := net.ListenPacket(a[0], a[1])
			if err != nil {
				return err
			}
			closers = append(closers, func() { c.Close() })
		}
		l, err := net.Listen("unix", filepath.Join(dir, "sock"))
		if err != nil {
			return err
		}
		closers = append(closers, func() { l.Close() })
		return nil
	})
	if err != nil {
		testutil.Unavailable(t, "sockets in a namespace: %v", err)
	}

	live := LiveSource{NS: netns.ByName(ns.Name)}
	var snap RowsSource
	err = live.Dump(t.Context(), Request{
		Protos: []sock.Proto{sock.ProtoUNIX, sock.ProtoRAW, sock.ProtoUDP, sock.ProtoTCP, sock.ProtoMPTCP},
		States: sock.AllStates,
		Info:   true,
		Mem:    true,
	}, func(s *sock.Socket) error {
		snap = append(snap, sockdiag.Clone(s))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{
		{"-tan"},
		{"-tln"},
		{"-ta"},
		{"-6tan"},
		{"-uan"},
		{"-xa"},
		// The live dump's netlink rows include its own sock_diag
		// socket, which the snapshot's dump saw in another state.
		{"-an", "-A", "all,!netlink"},
		{"-tan", "dport", "=", ":8080"},
		{"-tn", "state", "established", "sport", "=", ":22"},
		{"-tanm"},
		{"-a", "-A", "all,!netlink", "--json"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			o, rest := parseFlags(t, args)
			o.NetNS = ns.Name
			var want, got, errb bytes.Buffer
			if err := Run(t.Context(), &want, &errb, o, rest, live); err != nil {
				t.Fatal(err)
			}
			if err := Run(t.Context(), &got, &errb, o, rest, snap); err != nil {
				t.Fatal(err)
			}
			// Timers count down between the snapshot and the live dump.
			expires := regexp.MustCompile(`"expires_ms":-?[0-9]+`)
			if g, w := expires.ReplaceAllString(got.String(), "T"), expires.ReplaceAllString(want.String(), "T"); g != w {
				t.Errorf("over the rows:\n%s\nlive:\n%s", got.String(), want.String())
			}
			if strings.Count(want.String(), "\n") < 2 {
				t.Errorf("query found nothing:\n%s", want.String())
			}
		})
	}
}

// parseFlags applies the leading flags of args (clusters of ss's
// one-letter flags, and --json) to Options, as cmd/sstrace's flags would,
// and returns the rest.
func parseFlags(t *testing.T, args []string) (Options, []string) {
	t.Helper()
	var o Options
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch {
		case args[0] == "--json":
			o.JSON = true
		case args[0] == "-A" && len(args) > 1:
			if err := o.Selection.Query(args[1]); err != nil {
				t.Fatal(err)
			}
			args = args[1:]
		default:
			o = applyShort(t, o, args[0][1:])
		}
		args = args[1:]
	}
	return o, args
}

func applyShort(t *testing.T, o Options, flags string) Options {
	t.Helper()
	for _, c := range flags {
		switch c {
		case 't':
			o.Selection.Table(TCP)
		case 'u':
			o.Selection.Table(UDP)
		case 'x':
			o.Selection.Family(unix.AF_UNIX)
		case '6':
			o.Selection.Family(unix.AF_INET6)
		case 'a':
			o.Selection.All()
		case 'l':
			o.Selection.Listening()
		case 'n':
			o.Numeric = true
		case 'm':
			o.Memory = true
		default:
			t.Fatalf("parseFlags: no flag %c", c)
		}
	}
	return o
}

// TestWidthOption: Options.Width lays the columns out for that terminal
// width (the daemon renders for its client's terminal), as ss does at a
// terminal: the header spreads over the width; without it, the output is
// the compact layout ss prints into a pipe.
func TestWidthOption(t *testing.T) {
	rows := RowsSource{{Proto: sock.ProtoTCP, Family: unix.AF_INET, State: sock.Listen,
		Local: netip.MustParseAddrPort("127.0.0.1:22"), Peer: netip.MustParseAddrPort("0.0.0.0:0")}}
	run := func(width int) string {
		var o Options
		o.Selection.Table(TCP)
		o.Selection.All()
		o.Numeric = true
		o.Width = width
		var out, errb bytes.Buffer
		if err := Run(t.Context(), &out, &errb, o, nil, rows); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	compact, wide := run(0), run(160)
	header := strings.SplitN(wide, "\n", 2)[0]
	if compact == wide || len(header) < 150 {
		t.Errorf("width 160 did not reach the layout:\ncompact %q\nwide    %q", compact, wide)
	}
}
