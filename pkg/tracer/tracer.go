// Package tracer loads sstrace's BPF programs, attaches them to one kernel
// hook, and delivers every TCP state transition on the host as an Event.
//
// Usage:
//
//	t, err := tracer.Open(tracer.Options{})
//	if err != nil { ... }        // names the hook that failed and why
//	defer t.Close()
//	err = t.Run(ctx, tracer.HandlerFuncs{OnEvent: func(e *event.Event) error { ... }})
//
// Hooks are tried in the order of Hooks (see hooks.go); the first that loads
// and attaches wins, and only one is ever attached, so no transition is
// reported twice. Losses (ring buffer full) are counted in the kernel and
// reported by Stats; they are data, never only a log line.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/sstrace/sstrace/pkg/cgroup2"
	"github.com/sstrace/sstrace/pkg/event"
	"golang.org/x/sys/unix"
)

// Options configure Open. The zero value is usable.
type Options struct {
	// Hook forces one hook; "" or HookAuto tries them in order.
	Hook Hook
	// RingBufferSize is the ring buffer size in bytes, a power of two from
	// the page size to MaxRingBufferSize. Default (0) 8 MiB (about 70 000
	// events).
	RingBufferSize int
	// NetNS keeps only transitions in the network namespace with this
	// inode; 0 keeps all. Filtered in the kernel.
	NetNS uint32
	// Ports keeps only transitions of sockets with one of these ports at
	// either end; empty keeps all. At most MaxPorts. Filtered in the
	// kernel: trace FILTER's ports (filter.Query.Ports), a superset of
	// what the filter keeps. (Before 6.x a new child's first event has
	// no peer yet: a port filter on the peer alone misses that event.)
	Ports []uint16
	// WakeupBytes is how much data must be pending before the kernel wakes
	// the reader; below it the reader drains on FlushInterval. Default a
	// quarter of the ring: a wakeup is there to keep the ring from filling,
	// not to cut latency (FlushInterval bounds that). Every wakeup costs
	// the producer an irq_work (a self-IPI) and the reader a context
	// switch; at 64 KiB they were 30% of the kernel's and 35% of
	// userspace's cost per transition under full churn
	// (docs/BENCHMARKS.md). With the defaults the reader polls alone up to
	// about 290 000 transitions a second.
	WakeupBytes int
	// FlushInterval bounds the delay between a transition and its
	// delivery. Default 50 ms.
	FlushInterval time.Duration
}

const (
	defaultRingBufferSize = 8 << 20
	defaultFlushInterval  = 50 * time.Millisecond
)

// CookieMethod says how events get their socket cookie on this kernel.
type CookieMethod string

// Cookie methods.
const (
	// CookieMethodHelper: bpf_get_socket_cookie in the hook (tracing
	// programs, kernel 5.12+). Exact for every event.
	CookieMethodHelper CookieMethod = "helper"
	// CookieMethodMakers: the hook reads sk_cookie, made at socket
	// creation and at connection establishment by cgroup programs on the
	// cgroup v2 root.
	CookieMethodMakers CookieMethod = "cgroup-makers"
	// CookieMethodField: the hook reads sk_cookie only; sockets whose
	// cookie nobody made yet report 0.
	CookieMethodField CookieMethod = "field"
)

// Tracer is a loaded and attached set of transition programs.
type Tracer struct {
	hook         Hook
	catchers     bool // the hook's catcher programs are attached
	cookieMethod CookieMethod
	// cookieNote explains a degraded cookie method (why no makers).
	cookieNote string
	coll       *ebpf.Collection
	links      []link.Link
	reader     *ringbuf.Reader
	waiter     *ringWaiter // nil: Run blocks in the reader
	flush      time.Duration
	dec        *decoder
	hold       *holder
	received   atomic.Uint64
	drained    atomic.Int64 // DrainedAt, in Unix nanoseconds
}

// DrainedAt returns a time up to which Run has delivered every event: the
// start of the last reading that found the ring buffer empty (an event
// committed while reading is read too, so only the start is certain).
// Zero before the first such reading. A caller that
// dumped the kernel's sockets and wants the events of the dump's time
// (pkg/keeper) waits for DrainedAt to pass the dump's end: on a quiet
// host no newer event would come to say so.
func (t *Tracer) DrainedAt() time.Time {
	if n := t.drained.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Open checks the kernel, loads the programs and attaches them to the first
// hook that works (or the one forced by opts.Hook).
func Open(opts Options) (*Tracer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := CheckKernel(); err != nil {
		return nil, err
	}

	hooks := Hooks
	if opts.Hook != HookAuto {
		if _, err := ParseHook(string(opts.Hook)); err != nil {
			return nil, err
		}
		hooks = []Hook{opts.Hook}
	}
	var failures []string
	for _, h := range hooks {
		t, err := openHook(h, opts)
		if err == nil {
			return t, nil
		}
		failures = append(failures, fmt.Sprintf("%s: %v", h, err))
	}
	return nil, fmt.Errorf("no hook could be attached (%s)", strings.Join(failures, "; "))
}

// withDefaults fills the zero fields and validates the rest.
func (opts Options) withDefaults() (Options, error) {
	if opts.RingBufferSize == 0 {
		opts.RingBufferSize = defaultRingBufferSize
	}
	if opts.WakeupBytes == 0 {
		opts.WakeupBytes = opts.RingBufferSize / 4
	}
	if opts.WakeupBytes > opts.RingBufferSize/2 {
		opts.WakeupBytes = opts.RingBufferSize / 2
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = defaultFlushInterval
	}
	if opts.Hook == "" {
		opts.Hook = HookAuto
	}
	if err := CheckRingBufferSize(opts.RingBufferSize); err != nil {
		return opts, fmt.Errorf("ring buffer size %w", err)
	}
	if len(opts.Ports) > MaxPorts {
		return opts, fmt.Errorf("%d ports to filter in the kernel, at most %d", len(opts.Ports), MaxPorts)
	}
	return opts, nil
}

// MaxPorts is how many ports Options.Ports may hold (the programs' array).
const MaxPorts = 16

// MaxRingBufferSize is the largest ring buffer Open accepts: 1 GiB of
// locked kernel memory, about 9 million events, far beyond any backlog a
// reader that keeps up at all needs. The kernel itself takes up to 2 GiB
// and map sizes are 32-bit, so a larger value would fail late or wrap.
const MaxRingBufferSize = 1 << 30

// CheckRingBufferSize reports whether n is a ring buffer size Open accepts:
// a power of two from the page size to MaxRingBufferSize (a power of two
// of at least a page is a multiple of it). 0 is an error here: the default
// is Options' business, a command-line flag should reject it. The error
// begins with n, so a caller prefixes its flag or field.
func CheckRingBufferSize(n int) error {
	page := os.Getpagesize()
	if n < page || n > MaxRingBufferSize || n&(n-1) != 0 {
		return fmt.Errorf("%d: must be a power of two from %d to %d bytes (%s to 1 GiB)", n, page, MaxRingBufferSize, sizeText(page))
	}
	return nil
}

// sizeText writes a power-of-two size of at least 1 KiB in KiB or MiB.
func sizeText(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// CheckKernel reports, as one clear error, a missing privilege or kernel
// feature that makes tracing impossible whatever the hook.
func CheckKernel() error {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK. Raising it
	// needs CAP_SYS_RESOURCE; where that fails the loads below report
	// their own error, so this one is not fatal. (Not cilium/ebpf/rlimit:
	// its package init creates a BPF map in every sstrace process, ss
	// queries included.)
	_ = unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY})
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return errors.New("kernel BTF is missing (/sys/kernel/btf/vmlinux): sstrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.4 or newer)")
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		if errors.Is(err, unix.EPERM) || os.Geteuid() != 0 {
			return errPermission
		}
		return fmt.Errorf("BPF ring buffers are unavailable (%v): sstrace needs Linux 5.8 or newer", err)
	}
	return nil
}

var errPermission = errors.New("permission denied loading BPF: run as root (or with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN)")

// openHook loads and attaches one hook. Tracing hooks first try the
// cookie helper and fall back to the cookie makers where the kernel does not
// give tracing programs bpf_get_socket_cookie (before 5.12).
func openHook(h Hook, opts Options) (*Tracer, error) {
	if btfHook(h) {
		if t, err := load(h, opts, true, false); err == nil {
			return t, nil
		}
	}
	return load(h, opts, false, true)
}

// load builds the collection with only the programs hook h needs, so that
// programs this kernel cannot load (fentry on this host, say) never get in
// the way of the one that can. helper selects bpf_get_socket_cookie; without
// it, tryMakers adds the cgroup cookie makers when they can be attached.
func load(h Hook, opts Options, helper, tryMakers bool) (*Tracer, error) {
	spec, err := LoadTracer()
	if err != nil {
		return nil, err
	}
	// Catchers only where the kernel skips a tracing program that a
	// transition interrupts: the kernels that give tracing programs the
	// cookie helper (5.12+) are those. Before, the main program runs for
	// the nested transition itself, and a catcher would only cost.
	catchers := helper
	keep := map[string]bool{}
	for _, p := range programs(h, catchers) {
		keep[p.name] = true
	}
	makers := !helper && tryMakers
	var cgroupRoot, note string
	if makers {
		if cgroupRoot, err = cgroup2.Mount(); err != nil {
			makers = false
			note = err.Error()
		}
	}
	if makers {
		keep[TracerProgMakeCookieOnCreate] = true
		keep[TracerProgMakeCookieOnEstablished] = true
	}
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}
	spec.Maps[TracerMapEvents].MaxEntries = uint32(opts.RingBufferSize)
	var ports [MaxPorts]uint16
	copy(ports[:], opts.Ports)
	for name, v := range map[string]any{
		TracerVarTargetNetns:  opts.NetNS,
		TracerVarPortCount:    uint32(len(opts.Ports)),
		TracerVarPorts:        ports,
		TracerVarWakeupBytes:  uint32(opts.WakeupBytes),
		TracerVarCookieHelper: helper,
		// The same kernels (5.12+ for the cookie helper, 5.11+ for
		// this one) give tracing programs both.
		TracerVarTaskBtf: helper,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}

	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		if errors.Is(err, unix.EPERM) && os.Geteuid() != 0 {
			return nil, fmt.Errorf("load: %w (%v)", errPermission, err)
		}
		if errors.Is(err, unix.EPERM) {
			// cilium/ebpf appends a MEMLOCK hint to every EPERM; for
			// root on a kernel that accounts BPF memory to cgroups it
			// misleads, so only the errno is kept.
			return nil, fmt.Errorf("load: %w: the kernel refuses %s programs even to root (kernel lockdown, or no BPF trampoline/kprobe support)", unix.EPERM, h)
		}
		return nil, fmt.Errorf("load: %w", err)
	}
	t := &Tracer{hook: h, catchers: catchers, coll: coll, flush: opts.FlushInterval, dec: newDecoder(), hold: newHolder()}
	switch {
	case helper:
		t.cookieMethod = CookieMethodHelper
	case makers:
		t.cookieMethod = CookieMethodMakers
	default:
		t.cookieMethod = CookieMethodField
		t.cookieNote = note
	}
	if makers {
		// Makers first, so that no socket slips between the hook and them.
		ls, err := attachMakers(coll, cgroupRoot)
		if err != nil {
			// Reload without the maker programs.
			coll.Close()
			t2, err2 := load(h, opts, false, false)
			if err2 == nil {
				t2.cookieNote = fmt.Sprintf("cookie makers on %s: %v", cgroupRoot, err)
			}
			return t2, err2
		}
		t.links = append(t.links, ls...)
	}
	ls, err := attachHook(h, coll, catchers)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("attach: %w", err)
	}
	t.links = append(t.links, ls...)
	t.reader, err = ringbuf.NewReader(coll.Maps[TracerMapEvents])
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("ring buffer reader: %w", err)
	}
	if t.waiter, err = newRingWaiter(coll.Maps[TracerMapEvents].FD()); err != nil {
		t.waiter = nil // the reader's own blocking wait will do
	}
	return t, nil
}

func attachMakers(coll *ebpf.Collection, root string) ([]link.Link, error) {
	create, err := link.AttachCgroup(link.CgroupOptions{
		Path: root, Attach: ebpf.AttachCGroupInetSockCreate,
		Program: coll.Programs[TracerProgMakeCookieOnCreate],
	})
	if err != nil {
		return nil, fmt.Errorf("cgroup/sock_create: %w", err)
	}
	ops, err := link.AttachCgroup(link.CgroupOptions{
		Path: root, Attach: ebpf.AttachCGroupSockOps,
		Program: coll.Programs[TracerProgMakeCookieOnEstablished],
	})
	if err != nil {
		create.Close()
		return nil, fmt.Errorf("sockops: %w", err)
	}
	return []link.Link{create, ops}, nil
}

// Hook returns the hook in use.
func (t *Tracer) Hook() Hook { return t.hook }

// CookieMethod returns how events get their cookies, and a note on why it
// is degraded when it is CookieMethodField.
func (t *Tracer) CookieMethod() (CookieMethod, string) { return t.cookieMethod, t.cookieNote }

// Stats are the tracer's counters.
type Stats struct {
	Hook Hook
	// Submitted is the number of events the kernel put in the ring buffer.
	Submitted uint64
	// Lost is the number of events dropped because the ring buffer was
	// full. Non-zero means the consumer is too slow or the buffer too
	// small (--ring-size).
	Lost uint64
	// Received is the number of events delivered to the handler.
	Received uint64
	// Missed counts transitions the kernel did not run the program for:
	// a tracing program is not re-entered on a CPU where it is already
	// running, so a softirq transition that interrupts the program
	// (running for a process-context transition) is skipped by the kernel
	// and counted in the program's recursion misses (kernel >= 5.12).
	// These are lost events too: Run reports them with Lost. Where the
	// hook has catchers (tp_btf, fentry), what they recorded is not
	// counted here but in Caught.
	Missed uint64
	// Caught is the number of transitions a catcher program recorded
	// because the kernel skipped them for the main program (see Missed):
	// delivered, not lost.
	Caught uint64
	// DeferFull counts new children's first events sent as they were
	// (listener's addresses and cookie) because the table that holds them
	// back was full.
	DeferFull uint64
}

// Stats reads the kernel counters. Safe to call while Run is running.
func (t *Tracer) Stats() (Stats, error) {
	s := Stats{Hook: t.hook, Received: t.received.Load(), DeferFull: t.hold.full.Load()}
	s.Missed, s.Caught = t.missed()
	var err error
	if s.Submitted, err = t.readCounter(TracerCounterCOUNTER_EVENTS); err != nil {
		return s, err
	}
	s.Lost, err = t.readCounter(TracerCounterCOUNTER_LOST)
	return s, err
}

// Handler receives events from Run.
type Handler interface {
	// Event is called for every transition, in ring-buffer order. The
	// Event is reused after Event returns: copy what you keep.
	Event(*event.Event) error
	// Idle is called when the ring buffer has been drained, and at least
	// every flush interval under load: a good moment to flush buffered
	// output.
	Idle() error
	// Lost is called, before the next event, when the kernel's lost
	// counter has moved: lost events were dropped since the previous call
	// (total in all). The events delivered after it may lack transitions
	// that happened since the last Idle.
	Lost(lost, total uint64) error
}

// HandlerFuncs adapts functions to Handler; a nil function is skipped.
type HandlerFuncs struct {
	OnEvent func(*event.Event) error
	OnIdle  func() error
	OnLost  func(lost, total uint64) error
}

// Event calls OnEvent.
func (h HandlerFuncs) Event(e *event.Event) error {
	if h.OnEvent == nil {
		return nil
	}
	return h.OnEvent(e)
}

// Idle calls OnIdle.
func (h HandlerFuncs) Idle() error {
	if h.OnIdle == nil {
		return nil
	}
	return h.OnIdle()
}

// Lost calls OnLost.
func (h HandlerFuncs) Lost(lost, total uint64) error {
	if h.OnLost == nil {
		return nil
	}
	return h.OnLost(lost, total)
}

// checkEvery is how many records Run reads between two looks at its
// context and the clock: a busy ring never lets a read time out, so the
// reading loop itself must look.
const checkEvery = 256

// finalDrain bounds how long Run goes on reading what is already in the
// ring once its context has ended: long enough to deliver what was
// submitted before the stop, short enough that a ring kept full by churn
// cannot hold the stop back.
const finalDrain = 200 * time.Millisecond

// Run delivers events to h until ctx is done or h returns an error. It
// returns nil when ctx ends the run: within a flush interval plus
// finalDrain whatever the load, after delivering what the ring held when
// the stop came (up to finalDrain's worth). A read never blocks longer than
// the flush interval, and under load the loop looks at ctx every
// checkEvery records.
func (t *Tracer) Run(ctx context.Context, h Handler) error {
	reader := t.reader
	if reader == nil {
		return errors.New("tracer is closed")
	}
	var rec ringbuf.Record
	var ev event.Event
	var lostSeen uint64
	lastSync := time.Now()
	var drainUntil time.Time // set once ctx has ended
	waiter := t.waiter
	for {
		deadline := time.Now().Add(t.flush)
		if !drainUntil.IsZero() {
			deadline = time.Now() // do not wait for more
		}
		// readFrom: found empty after it, the ring had every event
		// committed before it.
		readFrom := deadline
		if waiter != nil && drainUntil.IsZero() {
			// Wait parked (see ringWaiter), then drain without
			// blocking.
			err := waiter.wait(deadline, func() bool { return reader.AvailableBytes() > 0 })
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("wait for the ring buffer: %w", err)
			}
			readFrom = time.Now()
			reader.SetDeadline(readFrom)
		} else {
			reader.SetDeadline(deadline)
		}
		for n := 1; ; n++ {
			err := reader.ReadInto(&rec)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.drained.Store(readFrom.UnixNano())
					break
				}
				if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
					return nil
				}
				return fmt.Errorf("read ring buffer: %w", err)
			}
			if !t.dec.decode(rec.RawSample, &ev) {
				return fmt.Errorf("ring buffer record of %d bytes, want %d: userspace and BPF object disagree", len(rec.RawSample), eventSize)
			}
			if err := t.deliver(h, &ev); err != nil {
				return err
			}
			if n%checkEvery == 0 {
				now := time.Now()
				if !drainUntil.IsZero() && now.After(drainUntil) {
					break
				}
				if drainUntil.IsZero() && ctx.Err() != nil {
					drainUntil = now.Add(finalDrain)
				}
				if now.After(deadline) {
					break // under load: still flush and look at losses
				}
			}
		}
		if lost := t.lostCount(); lost > lostSeen {
			if err := h.Lost(lost-lostSeen, lost); err != nil {
				return err
			}
			lostSeen = lost
		}
		if err := h.Idle(); err != nil {
			return err
		}
		if !drainUntil.IsZero() {
			return nil
		}
		if ctx.Err() != nil {
			// One more pass, without waiting, for what is already there.
			drainUntil = time.Now().Add(finalDrain)
			continue
		}
		if time.Since(lastSync) > 10*time.Second {
			t.dec.syncClock()
			lastSync = time.Now()
		}
	}
}

// deliver hands e to h, holding back a new child's first event until the
// child's next one (see holder).
func (t *Tracer) deliver(h Handler, e *event.Event) error {
	if firstOfChild(e) {
		if t.hold.hold(e) {
			return nil
		}
	} else if held := t.hold.release(e); held != nil {
		t.received.Add(1)
		if err := h.Event(held); err != nil {
			return err
		}
	}
	t.received.Add(1)
	return h.Event(e)
}

// lostCount reads the kernel's lost counter plus the programs' recursion
// misses (0 for what cannot be read).
func (t *Tracer) lostCount() uint64 {
	missed, _ := t.missed()
	return missed + t.counter(TracerCounterCOUNTER_LOST)
}

// counter sums one slot of the programs' per-CPU counters (0 when it
// cannot be read).
func (t *Tracer) counter(slot TracerCounter) uint64 {
	n, _ := t.readCounter(slot)
	return n
}

// readCounter sums one slot of the programs' per-CPU counters.
func (t *Tracer) readCounter(slot TracerCounter) (uint64, error) {
	var perCPU []uint64
	if err := t.coll.Maps[TracerMapCounters].Lookup(uint32(slot), &perCPU); err != nil {
		return 0, fmt.Errorf("read counters: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// missed returns Stats.Missed and Stats.Caught: the main programs'
// recursion misses less what their catchers took, and that. The misses are
// read first: a catch counted in between only lowers the figure for now,
// never below the truth at the next reading.
func (t *Tracer) missed() (missed, caught uint64) {
	var n uint64
	for _, p := range programs(t.hook, false) {
		if st, err := t.coll.Programs[p.name].Stats(); err == nil {
			n += st.RecursionMisses
		}
	}
	caught = t.counter(TracerCounterCOUNTER_CAUGHT)
	return n - min(n, caught), caught
}

// Close detaches and unloads everything. Safe to call more than once.
func (t *Tracer) Close() error {
	closeLinks(t.links)
	t.links = nil
	if t.waiter != nil {
		t.waiter.Close()
		t.waiter = nil
	}
	if t.reader != nil {
		t.reader.Close()
		t.reader = nil
	}
	if t.coll != nil {
		t.coll.Close()
		t.coll = nil
	}
	return nil
}
