package tracer

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/sstrace/sstrace/pkg/event"
	"golang.org/x/sys/unix"
)

// Hook names a kernel attachment point (see event.Hook for the names).
type Hook = event.Hook

// The hooks, re-exported for callers of Open.
const (
	HookAuto       = event.HookAuto
	HookTPBTF      = event.HookTPBTF
	HookTracepoint = event.HookTracepoint
	HookFentry     = event.HookFentry
	HookKprobe     = event.HookKprobe
)

// Hooks lists the concrete hooks in the order HookAuto tries them: the
// tracepoint is a stable interface and costs least; the function hooks are
// for kernels where it is unavailable. A hook's id in events comes from the
// kernel's enum event_hook (hookByID), never from its place here.
var Hooks = []Hook{HookTPBTF, HookTracepoint, HookFentry, HookKprobe}

// ParseHook validates a hook name from the command line.
func ParseHook(s string) (Hook, error) { return event.ParseHook(s) }

// hookProgram is one program of a hook and how it attaches. A catcher
// records only the transitions the kernel skipped for the main program
// beside it (bpf/tracer.bpf.c: main_running): its own recursion misses are
// transitions the main program had, not losses.
type hookProgram struct {
	name    string
	attach  func(*ebpf.Program) (link.Link, error)
	catcher bool
}

func attachTracing(p *ebpf.Program) (link.Link, error) {
	return link.AttachTracing(link.TracingOptions{Program: p})
}

func attachKprobe(fn string) func(*ebpf.Program) (link.Link, error) {
	return func(p *ebpf.Program) (link.Link, error) { return link.Kprobe(fn, p, nil) }
}

func attachTracepoint(p *ebpf.Program) (link.Link, error) {
	if err := ensureTracefs(); err != nil {
		return nil, err
	}
	return link.Tracepoint("sock", "inet_sock_set_state", p, nil)
}

// programs lists the programs hook h loads and attaches, its catchers
// among them when catchers is set (see hookProgram).
func programs(h Hook, catchers bool) []hookProgram {
	all := hookPrograms(h)
	if catchers {
		return all
	}
	out := all[:0:0]
	for _, p := range all {
		if !p.catcher {
			out = append(out, p)
		}
	}
	return out
}

// hookPrograms lists every program of hook h, in attach order.
func hookPrograms(h Hook) []hookProgram {
	switch h {
	case HookTPBTF:
		return []hookProgram{
			{TracerProgHandleTpBtf, attachTracing, false},
			{TracerProgCatchTpBtf, attachTracing, true},
		}
	case HookTracepoint:
		return []hookProgram{{TracerProgHandleTracepoint, attachTracepoint, false}}
	case HookFentry:
		// Each catcher is attached before its main program: a
		// trampoline runs the last attached first, so the main program
		// runs first. That order matters where the kernel re-enters
		// trampoline programs (before 5.12): there the main program
		// runs for a nested transition too, and clears its flag before
		// the catcher looks (run first, the catcher took the
		// transition as well: seen on 5.10). A tracepoint runs its
		// programs in attach order: tp_btf's list is the other way.
		return []hookProgram{
			{TracerProgCatchFentryTcp, attachTracing, true},
			{TracerProgHandleFentryTcp, attachTracing, false},
			{TracerProgCatchFentryInet, attachTracing, true},
			{TracerProgHandleFentryInet, attachTracing, false},
			{TracerProgHandleFentryListen, attachTracing, false},
		}
	case HookKprobe:
		return []hookProgram{
			{TracerProgHandleKprobeTcp, attachKprobe("tcp_set_state"), false},
			{TracerProgHandleKprobeInet, attachKprobe("inet_sk_set_state"), false},
			{TracerProgHandleKprobeListen, attachKprobe("inet_csk_listen_start"), false},
		}
	}
	return nil
}

// btf reports whether h's programs are BTF tracing programs, which get a
// typed socket pointer and, on 5.12+, bpf_get_socket_cookie.
func btfHook(h Hook) bool { return h == HookTPBTF || h == HookFentry }

// attach attaches the loaded programs of hook h: all of them, or none.
func attachHook(h Hook, coll *ebpf.Collection, catchers bool) ([]link.Link, error) {
	var links []link.Link
	for _, p := range programs(h, catchers) {
		l, err := p.attach(coll.Programs[p.name])
		if err != nil {
			closeLinks(links)
			if h == HookKprobe && errors.Is(err, os.ErrNotExist) {
				err = fmt.Errorf("this kernel has no kprobes (neither the kprobe PMU nor tracefs kprobe_events; CONFIG_KPROBES off?): %w", err)
			}
			return nil, err
		}
		links = append(links, l)
	}
	return links, nil
}

func closeLinks(links []link.Link) {
	for _, l := range links {
		_ = l.Close()
	}
}

// ensureTracefs mounts tracefs at /sys/kernel/tracing when neither it nor
// the debugfs copy is mounted: the classic tracepoint's id is read there.
func ensureTracefs() error {
	for _, p := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: %w", err)
	}
	return nil
}
