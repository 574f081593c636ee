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

// programs returns the program names a hook needs and whether they are
// BTF tracing programs (which may call bpf_get_socket_cookie on 5.12+).
func (h Hook) programs() (names []string, tracing bool) {
	switch h {
	case HookTPBTF:
		return []string{TracerProgHandleTpBtf}, true
	case HookTracepoint:
		return []string{TracerProgHandleTracepoint}, false
	case HookFentry:
		return []string{TracerProgHandleFentryTcp, TracerProgHandleFentryInet, TracerProgHandleFentryListen}, true
	case HookKprobe:
		return []string{TracerProgHandleKprobeTcp, TracerProgHandleKprobeInet, TracerProgHandleKprobeListen}, false
	}
	return nil, false
}

// attach attaches the loaded programs of hook h.
func (h Hook) attach(coll *ebpf.Collection) ([]link.Link, error) {
	var links []link.Link
	add := func(l link.Link, err error) error {
		if err != nil {
			return err
		}
		links = append(links, l)
		return nil
	}
	var err error
	switch h {
	case HookTPBTF:
		err = add(link.AttachTracing(link.TracingOptions{Program: coll.Programs[TracerProgHandleTpBtf]}))
	case HookTracepoint:
		if err = ensureTracefs(); err == nil {
			err = add(link.Tracepoint("sock", "inet_sock_set_state", coll.Programs[TracerProgHandleTracepoint], nil))
		}
	case HookFentry:
		for _, p := range []string{TracerProgHandleFentryTcp, TracerProgHandleFentryInet, TracerProgHandleFentryListen} {
			if err = add(link.AttachTracing(link.TracingOptions{Program: coll.Programs[p]})); err != nil {
				break
			}
		}
	case HookKprobe:
		for fn, p := range map[string]string{
			"tcp_set_state":         TracerProgHandleKprobeTcp,
			"inet_sk_set_state":     TracerProgHandleKprobeInet,
			"inet_csk_listen_start": TracerProgHandleKprobeListen,
		} {
			if err = add(link.Kprobe(fn, coll.Programs[p], nil)); err != nil {
				break
			}
		}
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("this kernel has no kprobes (neither the kprobe PMU nor tracefs kprobe_events; CONFIG_KPROBES off?): %w", err)
		}
	default:
		err = fmt.Errorf("unknown hook %q", h)
	}
	if err != nil {
		closeLinks(links)
		return nil, err
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
