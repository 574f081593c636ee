package main

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
)

// Address layout. Listener ports sit below the client port range so that a
// wildcard listener never collides with an explicitly bound client; every
// client gets its own (address, port) pair from its worker's 127.W.0.0/16,
// so no two workers and no two connections ever compete for a 4-tuple and
// the kernel's ephemeral-port search is never involved.
const (
	firstListenPort = 1024
	lastListenPort  = 9999
	firstClientPort = 10000
	clientPorts     = 50000 // 10000..59999
	clientHosts     = 250   // last octet 1..250
	firstWorkerNet  = 16    // worker i owns 127.(16+i).0.0/16
	maxWorkers      = 255 - firstWorkerNet
)

// options are the command-line settings of a farm.
type options struct {
	// Netns is the name of an existing namespace under /run/netns.
	Netns string
	// Total is the number of TCP sockets to build, counted as `ss -tan`
	// shows them (both ends of a connection count; a TIME-WAIT entry
	// counts once).
	Total int
	// ListenPct, EstabPct, CloseWaitPct and TimeWaitPct split Total; they
	// must add up to 100.
	ListenPct, EstabPct, CloseWaitPct, TimeWaitPct float64
	// MaxFDs is how many sockets one worker may hold open. The hard
	// per-process limit here is 20000 and cannot be raised; the default
	// leaves room for the Go runtime and for the pairs being built.
	MaxFDs int
	// Batch is how many connections are opened before they are accepted:
	// large enough to amortise the loop, well below the listen backlog.
	Batch int
	// FinTimeout is the netns's tcp_fin_timeout in seconds. The peers of
	// CLOSE-WAIT sockets are orphaned FIN-WAIT-2 sockets that live this
	// long; a short value lets the population settle within seconds.
	FinTimeout int
	// KeepTimeWait makes the farm replace TIME-WAIT sockets as the kernel
	// expires them (after a fixed 60 s), so the population holds steady for
	// as long as a benchmark runs.
	KeepTimeWait bool
	// Verbose logs every TIME-WAIT top-up on stderr.
	Verbose bool
}

// defaultOptions is a server-like mix: mostly established connections, a
// third as many TIME-WAIT entries, a leak of CLOSE-WAIT and 1% listeners.
func defaultOptions() options {
	return options{
		Total:        100000,
		ListenPct:    1,
		EstabPct:     60,
		CloseWaitPct: 9,
		TimeWaitPct:  30,
		MaxFDs:       18500,
		Batch:        128,
		FinTimeout:   1,
		KeepTimeWait: true,
	}
}

// mix is a number of sockets per kind.
type mix struct {
	Listen     int `json:"listen"`
	EstabPairs int `json:"estabPairs"` // each pair is two ESTAB sockets
	CloseWait  int `json:"closeWait"`
	TimeWait   int `json:"timeWait"`
}

// Sockets is the number of socket entries the mix puts in the table.
func (m mix) Sockets() int { return m.Listen + 2*m.EstabPairs + m.CloseWait + m.TimeWait }

// FDs is the number of file descriptors the mix holds once built: TIME-WAIT
// entries hold none, and the peer of a CLOSE-WAIT socket has been closed.
func (m mix) FDs() int { return m.Listen + 2*m.EstabPairs + m.CloseWait }

// workerPlan is what one worker process builds; it travels to the worker as
// JSON in its environment.
type workerPlan struct {
	Index int `json:"index"`
	// FirstPort is the port of the worker's first listener; its listeners
	// use FirstPort, FirstPort+1, ...
	FirstPort int `json:"firstPort"`
	Mix       mix `json:"mix"`
	Batch     int `json:"batch"`
	MaxFDs    int `json:"maxFDs"`
	// NetnsPath is the namespace file the worker must find itself in.
	NetnsPath string `json:"netnsPath"`
}

// validate checks the options and says which one is wrong.
func (o options) validate() error {
	if o.Netns == "" {
		return errors.New("--netns is required (create it first: ip netns add NAME)")
	}
	if o.Total <= 0 {
		return fmt.Errorf("--total must be positive, got %d", o.Total)
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"--listen", o.ListenPct}, {"--estab", o.EstabPct}, {"--close-wait", o.CloseWaitPct}, {"--time-wait", o.TimeWaitPct}} {
		if p.v < 0 || p.v > 100 || math.IsNaN(p.v) {
			return fmt.Errorf("%s must be a percentage between 0 and 100, got %g", p.name, p.v)
		}
	}
	if sum := o.ListenPct + o.EstabPct + o.CloseWaitPct + o.TimeWaitPct; math.Abs(sum-100) > 1e-9 {
		return fmt.Errorf("--listen, --estab, --close-wait and --time-wait must add up to 100, got %g", sum)
	}
	if o.MaxFDs < 16 {
		return fmt.Errorf("--max-fds must be at least 16, got %d", o.MaxFDs)
	}
	if o.Batch < 1 || o.Batch > 1024 {
		return fmt.Errorf("--batch must be between 1 and 1024 (the listen backlog), got %d", o.Batch)
	}
	if o.FinTimeout < 1 {
		return fmt.Errorf("--fin-timeout must be at least 1 second, got %d", o.FinTimeout)
	}
	return nil
}

// split turns a total and its percentages into whole socket counts that add
// up to the total (the largest-remainder method), with an even number of
// ESTAB sockets since they come in pairs.
func split(o options) mix {
	pcts := []float64{o.ListenPct, o.EstabPct, o.CloseWaitPct, o.TimeWaitPct}
	counts := make([]int, 4)
	rem := o.Total
	for i, p := range pcts {
		counts[i] = int(math.Floor(float64(o.Total) * p / 100))
		rem -= counts[i]
	}
	for rem > 0 {
		best, bestFrac := -1, -1.0
		for i, p := range pcts {
			if p == 0 {
				continue
			}
			exact := float64(o.Total) * p / 100
			if f := exact - float64(counts[i]); f > bestFrac {
				best, bestFrac = i, f
			}
		}
		counts[best]++
		rem--
	}
	if counts[1]%2 == 1 {
		// An odd ESTAB count: give the odd socket to a kind that takes
		// single sockets, preferring the largest of them.
		counts[1]--
		switch {
		case o.TimeWaitPct > 0:
			counts[3]++
		case o.CloseWaitPct > 0:
			counts[2]++
		case o.ListenPct > 0:
			counts[0]++
		}
	}
	return mix{Listen: counts[0], EstabPairs: counts[1] / 2, CloseWait: counts[2], TimeWait: counts[3]}
}

// share is worker i's part of n spread over w workers.
func share(n, w, i int) int {
	s := n / w
	if i < n%w {
		s++
	}
	return s
}

// planWorkers spreads a mix over as few workers as keep each under the
// per-process file limit. Every worker needs a listener of its own to accept
// its connections on.
func planWorkers(o options, netnsPath string) ([]workerPlan, error) {
	m := split(o)
	w := (m.FDs() + o.MaxFDs - 1) / o.MaxFDs
	if w < 1 {
		w = 1
	}
	if w > maxWorkers {
		return nil, fmt.Errorf("%d sockets need %d workers of at most %d files; the address plan allows %d", o.Total, w, o.MaxFDs, maxWorkers)
	}
	if m.Listen > lastListenPort-firstListenPort+1 {
		return nil, fmt.Errorf("%d listeners do not fit in ports %d-%d; lower --listen", m.Listen, firstListenPort, lastListenPort)
	}
	if m.EstabPairs+m.CloseWait+m.TimeWait > 0 && m.Listen < w {
		return nil, fmt.Errorf("connections need at least one listener per worker (%d workers) but --listen gives %d; raise --listen", w, m.Listen)
	}
	plans := make([]workerPlan, w)
	port := firstListenPort
	for i := range plans {
		pm := mix{
			Listen:     share(m.Listen, w, i),
			EstabPairs: share(m.EstabPairs, w, i),
			CloseWait:  share(m.CloseWait, w, i),
			TimeWait:   share(m.TimeWait, w, i),
		}
		if pm.FDs() > o.MaxFDs {
			// Rounding can push one worker a socket or two over; never
			// more than the limit itself.
			return nil, fmt.Errorf("internal: worker %d would hold %d files, over --max-fds %d", i, pm.FDs(), o.MaxFDs)
		}
		plans[i] = workerPlan{Index: i, FirstPort: port, Mix: pm, Batch: o.Batch, MaxFDs: o.MaxFDs, NetnsPath: netnsPath}
		port += pm.Listen
	}
	return plans, nil
}

// clientAddr is the k-th client endpoint of worker w. Consecutive clients
// cycle through 250 addresses first, so the table looks like many hosts
// each with a run of ports, not one host with 50000.
func clientAddr(w, k int) (netip.AddrPort, error) {
	if w < 0 || w >= maxWorkers || k < 0 {
		return netip.AddrPort{}, fmt.Errorf("client %d of worker %d is outside the address plan", k, w)
	}
	host := k % clientHosts
	rest := k / clientHosts
	port := firstClientPort + rest%clientPorts
	third := rest / clientPorts
	if third > 255 {
		return netip.AddrPort{}, fmt.Errorf("worker %d ran out of client addresses after %d connections", w, k)
	}
	addr := netip.AddrFrom4([4]byte{127, byte(firstWorkerNet + w), byte(third), byte(host + 1)})
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// listenAddr is where listener j of the whole farm binds: alternately the
// wildcard and loopback, as a real host has both kinds. Clients always
// connect to 127.0.0.1, which reaches either.
func listenAddr(port int) netip.AddrPort {
	if port%2 == 0 {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port))
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
}
