package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// bootOptions configure one VM.
type bootOptions struct {
	qemu    string // the emulator for arch (-qemu, -qemu-arm64)
	arch    guestArch
	accel   string // -accel
	cpu     string // -cpu
	memory  string // -m
	cpus    int    // -smp
	timeout time.Duration
	hooks   []string
	testRun string
	// testTimeout bounds one hook's test run inside the guest.
	testTimeout time.Duration
	logFile     string // the console is copied here as it arrives
	extraArgs   string // appended to the kernel command line (debugging)
}

// bootResult is what a VM left behind.
type bootResult struct {
	Console  []byte
	Duration time.Duration
	TimedOut bool
	Err      error // qemu failed to start or exited non-zero
}

// kernelCmdline is what the guest kernel is booted with; vmtest.* reach
// /init through /proc/cmdline (the kernel ignores them).
func kernelCmdline(o bootOptions) string {
	return strings.Join(append([]string{
		"console=" + o.arch.Console,
		// Reboot at once on a panic, which -no-reboot turns into qemu exiting.
		"panic=-1",
		"quiet",
		"vmtest.hooks=" + strings.Join(o.hooks, ","),
		"vmtest.run=" + o.testRun,
		"vmtest.timeout=" + o.testTimeout.String(),
	}, strings.Fields(o.extraArgs)...), " ")
}

// boot runs one kernel with its initramfs under TCG (KVM is not usable in
// this VM) and returns its serial console. The guest powers itself off;
// the timeout kills it if it does not.
func boot(ctx context.Context, vmlinuz, initrd string, o bootOptions) bootResult {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	args := append(slices.Clone(o.arch.QEMUArgs),
		"-accel", o.accel, "-cpu", o.cpu,
		"-m", o.memory, "-smp", fmt.Sprint(o.cpus),
		"-nographic", "-no-reboot",
		"-nic", "none", // loopback only; no emulated NIC to probe either
		"-kernel", vmlinuz, "-initrd", initrd,
		"-append", kernelCmdline(o),
	)
	cmd := exec.CommandContext(ctx, o.qemu, args...)
	var console bytes.Buffer
	var w io.Writer = &console
	if o.logFile != "" {
		if f, err := os.Create(o.logFile); err == nil {
			defer f.Close()
			w = io.MultiWriter(&console, f)
		}
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Stdin = nil // /dev/null: nothing types into the console
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	res := bootResult{Console: console.Bytes(), Duration: time.Since(start)}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.TimedOut = true
		res.Err = fmt.Errorf("timed out after %s", o.timeout)
	} else if err != nil {
		res.Err = fmt.Errorf("%s: %w", o.qemu, err)
	}
	return res
}
