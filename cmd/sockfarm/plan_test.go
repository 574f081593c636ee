package main

import (
	"io"
	"strings"
	"testing"
)

func TestSplitAddsUpAndPairsAreWhole(t *testing.T) {
	cases := []struct {
		name string
		o    options
	}{
		{"default 100k", defaultOptions()},
		{"odd total", func() options { o := defaultOptions(); o.Total = 12345; return o }()},
		{"tiny", func() options { o := defaultOptions(); o.Total = 7; return o }()},
		{"thirds", options{Total: 1000, ListenPct: 100.0 / 3, EstabPct: 100.0 / 3, TimeWaitPct: 100.0 / 3}},
		{"estab only, odd", options{Total: 101, EstabPct: 100}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := split(c.o)
			want := c.o.Total
			if c.o.EstabPct == 100 && want%2 == 1 {
				want-- // pairs only: one socket cannot be built
			}
			if got := m.Sockets(); got != want {
				t.Fatalf("split(%d) = %+v: %d sockets, want %d", c.o.Total, m, got, want)
			}
			for kind, pct := range map[string]float64{"listen": c.o.ListenPct, "estab": c.o.EstabPct, "close-wait": c.o.CloseWaitPct, "time-wait": c.o.TimeWaitPct} {
				var got int
				switch kind {
				case "listen":
					got = m.Listen
				case "estab":
					got = 2 * m.EstabPairs
				case "close-wait":
					got = m.CloseWait
				case "time-wait":
					got = m.TimeWait
				}
				if exact := float64(c.o.Total) * pct / 100; float64(got) < exact-2 || float64(got) > exact+2 {
					t.Errorf("%s: %d sockets, want about %.1f", kind, got, exact)
				}
			}
		})
	}
}

func TestPlanWorkersStaysUnderTheFileLimit(t *testing.T) {
	o := defaultOptions()
	o.Netns = "x"
	plans, err := planWorkers(o, "/run/netns/x")
	if err != nil {
		t.Fatal(err)
	}
	m := split(o)
	if want := (m.FDs() + o.MaxFDs - 1) / o.MaxFDs; len(plans) != want {
		t.Fatalf("%d workers, want %d", len(plans), want)
	}
	var sum mix
	nextPort := firstListenPort
	for i, p := range plans {
		if p.Index != i {
			t.Errorf("worker %d has index %d", i, p.Index)
		}
		if p.Mix.FDs() > o.MaxFDs {
			t.Errorf("worker %d holds %d files, over %d", i, p.Mix.FDs(), o.MaxFDs)
		}
		if p.Mix.Listen == 0 {
			t.Errorf("worker %d has no listener to accept on", i)
		}
		if p.FirstPort != nextPort {
			t.Errorf("worker %d listens from port %d, want %d (ranges must be disjoint and contiguous)", i, p.FirstPort, nextPort)
		}
		nextPort += p.Mix.Listen
		sum.Listen += p.Mix.Listen
		sum.EstabPairs += p.Mix.EstabPairs
		sum.CloseWait += p.Mix.CloseWait
		sum.TimeWait += p.Mix.TimeWait
	}
	if sum != m {
		t.Errorf("workers together build %+v, want %+v", sum, m)
	}
	if nextPort-1 > lastListenPort {
		t.Errorf("listeners reach port %d, past %d", nextPort-1, lastListenPort)
	}
}

func TestPlanWorkersRejectsImpossibleMixes(t *testing.T) {
	o := defaultOptions()
	o.Netns = "x"
	o.Total = 100000
	o.ListenPct, o.EstabPct = 0.001, 60.999 // 1 listener for 4 workers
	if _, err := planWorkers(o, "p"); err == nil || !strings.Contains(err.Error(), "listener per worker") {
		t.Errorf("one listener for several workers: err = %v", err)
	}
	o = defaultOptions()
	o.ListenPct, o.EstabPct = 20, 41 // 20000 listeners
	if _, err := planWorkers(o, "p"); err == nil || !strings.Contains(err.Error(), "do not fit") {
		t.Errorf("20000 listeners: err = %v", err)
	}
}

func TestClientAddrIsUniqueAndInTheWorkersNet(t *testing.T) {
	seen := map[string]bool{}
	for w := range 3 {
		for k := range 120000 { // past one full cycle of hosts and ports
			a, err := clientAddr(w, k)
			if err != nil {
				t.Fatal(err)
			}
			b := a.Addr().As4()
			if b[0] != 127 || int(b[1]) != firstWorkerNet+w || b[3] == 0 || b[3] > clientHosts {
				t.Fatalf("clientAddr(%d, %d) = %s: outside 127.%d.0.0/16 or a .0 host", w, k, a, firstWorkerNet+w)
			}
			if p := int(a.Port()); p < firstClientPort || p >= firstClientPort+clientPorts {
				t.Fatalf("clientAddr(%d, %d) = %s: port outside the client range", w, k, a)
			}
			if seen[a.String()] {
				t.Fatalf("clientAddr(%d, %d) = %s: used twice", w, k, a)
			}
			seen[a.String()] = true
		}
	}
	if _, err := clientAddr(0, clientHosts*clientPorts*256); err == nil {
		t.Error("no error past the address plan")
	}
	if _, err := clientAddr(maxWorkers, 0); err == nil {
		t.Error("no error for a worker past the plan")
	}
}

func TestValidateNamesTheBadOption(t *testing.T) {
	mod := func(f func(*options)) options { o := defaultOptions(); o.Netns = "x"; f(&o); return o }
	cases := []struct {
		o    options
		want string
	}{
		{mod(func(o *options) { o.Netns = "" }), "--netns"},
		{mod(func(o *options) { o.Total = 0 }), "--total"},
		{mod(func(o *options) { o.Total = -5 }), "--total"},
		{mod(func(o *options) { o.EstabPct = -1; o.TimeWaitPct = 31 }), "--estab"},
		{mod(func(o *options) { o.TimeWaitPct = 31 }), "add up to 100"},
		{mod(func(o *options) { o.MaxFDs = 3 }), "--max-fds"},
		{mod(func(o *options) { o.Batch = 0 }), "--batch"},
		{mod(func(o *options) { o.Batch = 5000 }), "--batch"},
		{mod(func(o *options) { o.FinTimeout = 0 }), "--fin-timeout"},
	}
	for _, c := range cases {
		err := c.o.validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("validate(%+v) = %v, want an error naming %s", c.o, err, c.want)
		}
	}
	if err := mod(func(*options) {}).validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--netns", "bench", "--total", "5000", "--listen", "2", "--estab", "58", "--keep-time-wait=false"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Netns != "bench" || o.Total != 5000 || o.ListenPct != 2 || o.EstabPct != 58 || o.KeepTimeWait {
		t.Errorf("parsed %+v", o)
	}
	if _, err := parseFlags([]string{"--netns", "x", "extra"}, io.Discard); err == nil || !strings.Contains(err.Error(), `"extra"`) {
		t.Errorf("stray argument: err = %v", err)
	}
	if _, err := parseFlags([]string{"--bogus"}, io.Discard); err == nil {
		t.Error("unknown flag accepted")
	}
	if _, err := parseFlags([]string{"--total", "many"}, io.Discard); err == nil {
		t.Error("non-numeric --total accepted")
	}
}

func TestNetnsPathErrors(t *testing.T) {
	if _, err := netnsPath("sockfarm-no-such-netns"); err == nil || !strings.Contains(err.Error(), "ip netns add sockfarm-no-such-netns") {
		t.Errorf("missing netns: err = %v", err)
	}
	for _, bad := range []string{"", "a/b", "..", "."} {
		if _, err := netnsPath(bad); err == nil {
			t.Errorf("netnsPath(%q): no error", bad)
		}
	}
}

func TestStateCounts(t *testing.T) {
	var c stateCounts
	c[1], c[5], c[6], c[10] = 4, 2, 3, 1
	if c.Total() != 10 || c.Transient() != 2 {
		t.Errorf("Total %d Transient %d, want 10 and 2", c.Total(), c.Transient())
	}
	if got := c.String(); got != "ESTAB=4 FIN-WAIT-2=2 TIME-WAIT=3 LISTEN=1" {
		t.Errorf("String() = %q", got)
	}
}
