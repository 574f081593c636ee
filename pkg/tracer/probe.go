package tracer

import (
	"os"

	"golang.org/x/sys/unix"
)

// HookStatus says whether a hook works on this kernel, and if not, why.
type HookStatus struct {
	Hook      Hook   `json:"name"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	// Cookies is how events would get their cookie with this hook.
	Cookies     CookieMethod `json:"cookies,omitempty"`
	CookiesNote string       `json:"cookies_note,omitempty"`
	// Catcher says the hook attaches catcher programs here: transitions
	// the kernel skips for a program a softirq interrupted are delivered
	// (tp_btf and fentry, kernels 5.12+; see Stats.Caught).
	Catcher bool `json:"catcher"`
}

// Report is what Probe found out about this kernel.
type Report struct {
	Kernel string `json:"kernel"`
	BTF    bool   `json:"btf"`
	// Problem is set when tracing is impossible whatever the hook.
	Problem string       `json:"problem,omitempty"`
	Hooks   []HookStatus `json:"hooks"`
	// Chosen is the hook HookAuto would pick; "" when none works.
	Chosen Hook `json:"chosen"`
}

// KernelRelease is the running kernel's release (uname -r), "" if unknown.
func KernelRelease() string {
	var uts unix.Utsname
	if unix.Uname(&uts) != nil {
		return ""
	}
	return unix.ByteSliceToString(uts.Release[:])
}

// Probe tries every hook for real (load, attach, detach), so the answer is
// the kernel's, not a guess from its version.
func Probe() Report {
	r := Report{Kernel: KernelRelease()}
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	r.BTF = err == nil
	if err := CheckKernel(); err != nil {
		r.Problem = err.Error()
	}
	// A small ring: the probe only loads and attaches.
	opts, _ := Options{RingBufferSize: os.Getpagesize() * 4}.withDefaults()
	for _, h := range Hooks {
		st := HookStatus{Hook: h}
		if r.Problem != "" {
			st.Reason = r.Problem
			r.Hooks = append(r.Hooks, st)
			continue
		}
		t, err := openHook(h, opts)
		if err != nil {
			st.Reason = err.Error()
		} else {
			st.Available = true
			st.Cookies, st.CookiesNote = t.CookieMethod()
			st.Catcher = t.catchers
			t.Close()
			if r.Chosen == "" {
				r.Chosen = h
			}
		}
		r.Hooks = append(r.Hooks, st)
	}
	return r
}
