package tracer

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Hook names a kernel attachment point for the transition programs.
type Hook string

// The hooks, in the order HookAuto tries them.
const (
	// HookAuto picks the first hook that loads and attaches.
	HookAuto Hook = "auto"
	// HookTPBTF is the BTF-typed sock:inet_sock_set_state tracepoint.
	HookTPBTF Hook = "tp_btf"
	// HookTracepoint is the classic sock:inet_sock_set_state tracepoint
	// (needs tracefs, which the tracer mounts if missing).
	HookTracepoint Hook = "tracepoint"
	// HookFentry is fentry on tcp_set_state, inet_sk_set_state and
	// inet_csk_listen_start: the three places TCP changes state through
	// (the last inlines the tracepoint's CLOSE -> LISTEN).
	HookFentry Hook = "fentry"
	// HookKprobe is kprobes on the same three functions.
	HookKprobe Hook = "kprobe"
)

// Hooks lists the concrete hooks in the order HookAuto tries them: the
// tracepoint is a stable interface and costs least; the function hooks are
// for kernels where it is unavailable.
var Hooks = []Hook{HookTPBTF, HookTracepoint, HookFentry, HookKprobe}

// ParseHook validates a hook name from the command line.
func ParseHook(s string) (Hook, error) {
	h := Hook(strings.ToLower(s))
	if h == "" || h == HookAuto {
		return HookAuto, nil
	}
	for _, k := range Hooks {
		if h == k {
			return h, nil
		}
	}
	return "", fmt.Errorf("unknown hook %q: want auto, tp_btf, tracepoint, fentry or kprobe", s)
}

func hookByID(id uint8) Hook {
	if id >= 1 && int(id) <= len(Hooks) {
		return Hooks[id-1]
	}
	return ""
}

// hookProgram is one program of a hook and how it attaches.
type hookProgram struct {
	name   string
	attach func(*ebpf.Program) (link.Link, error)
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

// programs lists the programs hook h loads and attaches.
func (h Hook) programs() []hookProgram {
	switch h {
	case HookTPBTF:
		return []hookProgram{{TracerProgHandleTpBtf, attachTracing}}
	case HookTracepoint:
		return []hookProgram{{TracerProgHandleTracepoint, attachTracepoint}}
	case HookFentry:
		return []hookProgram{
			{TracerProgHandleFentryTcp, attachTracing},
			{TracerProgHandleFentryInet, attachTracing},
			{TracerProgHandleFentryListen, attachTracing},
		}
	case HookKprobe:
		return []hookProgram{
			{TracerProgHandleKprobeTcp, attachKprobe("tcp_set_state")},
			{TracerProgHandleKprobeInet, attachKprobe("inet_sk_set_state")},
			{TracerProgHandleKprobeListen, attachKprobe("inet_csk_listen_start")},
		}
	}
	return nil
}

// btf reports whether h's programs are BTF tracing programs, which get a
// typed socket pointer and, on 5.12+, bpf_get_socket_cookie.
func (h Hook) btf() bool { return h == HookTPBTF || h == HookFentry }

// attach attaches the loaded programs of hook h: all of them, or none.
func (h Hook) attach(coll *ebpf.Collection) ([]link.Link, error) {
	var links []link.Link
	for _, p := range h.programs() {
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
