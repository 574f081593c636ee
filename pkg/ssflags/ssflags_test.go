package ssflags

import (
	"reflect"
	"strings"
	"testing"
)

// TestArgsRoundTrip: what a client forwards parses to the same Options in
// the daemon, order-dependent options included.
func TestArgsRoundTrip(t *testing.T) {
	for _, argv := range [][]string{
		{"-tan"},
		{"-a", "-t", "-4", "-p", "-o"},
		{"-A", "tcp,udp", "-l", "-N", "blue", "-F", "/tmp/f", "--json"},
		{"--socket", "tcp", "-H", "-O", "-e", "-m", "-i", "-s", "-r", "-f", "inet6"},
	} {
		var daemonSocket string
		s := New(&daemonSocket)
		if err := s.Flags.Parse(argv); err != nil {
			t.Fatalf("%v: %v", argv, err)
		}
		opts, words, err := Parse(append(s.Args(), "--", "dport", "=", ":22"))
		if err != nil {
			t.Fatalf("%v: forwarded %v: %v", argv, s.Args(), err)
		}
		if !reflect.DeepEqual(opts, s.Options) {
			t.Errorf("%v: forwarded %v gives\n%+v, want\n%+v", argv, s.Args(), opts, s.Options)
		}
		if !reflect.DeepEqual(words, []string{"dport", "=", ":22"}) {
			t.Errorf("%v: words %v", argv, words)
		}
	}
}

// TestDaemonSocket: a --socket value with a slash names the daemon and is
// not forwarded; without one it is ss's -A.
func TestDaemonSocket(t *testing.T) {
	var daemonSocket string
	s := New(&daemonSocket)
	if err := s.Flags.Parse([]string{"--socket", "/run/sstrace/sstrace.sock", "-t"}); err != nil {
		t.Fatal(err)
	}
	if daemonSocket != "/run/sstrace/sstrace.sock" || len(s.Args()) != 1 || s.Args()[0] != "--tcp=true" {
		t.Errorf("socket %q, args %v", daemonSocket, s.Args())
	}
	if _, _, err := Parse([]string{"--socket=/x"}); err == nil {
		t.Error("the daemon accepted a daemon socket as a query")
	}
}

// TestEmptyNetNS: `-N ”` fails as in ss, also when a client forwards it
// to the daemon (`--net=`), instead of meaning the caller's namespace.
func TestEmptyNetNS(t *testing.T) {
	for _, argv := range [][]string{{"-N", ""}, {"--net="}} {
		s := New(nil)
		if err := s.Flags.Parse(argv); err != nil {
			t.Fatal(err)
		}
		if _, _, err := Parse(append(s.Args(), "-t")); err == nil || !strings.Contains(err.Error(), "network namespace") {
			t.Errorf("Parse(%q) after %q: err %v, want a namespace error", s.Args(), argv, err)
		}
	}
	if _, _, err := Parse([]string{"-t"}); err != nil {
		t.Errorf("no -N: %v", err)
	}
}
