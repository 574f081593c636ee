package main

import (
	"debug/elf"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Each architecture boots with its own serial console and machine; a
// wrong console= leaves the VM silent until -vm-timeout.
func TestArchBootArguments(t *testing.T) {
	for arch, console := range map[string]string{"amd64": "console=ttyS0", "arm64": "console=ttyAMA0"} {
		a, err := lookupArch(arch)
		if err != nil {
			t.Fatal(err)
		}
		line := kernelCmdline(bootOptions{arch: a, hooks: []string{"kprobe"}, testRun: "E2E"})
		if !strings.HasPrefix(line, console+" ") || !strings.Contains(line, "vmtest.hooks=kprobe") {
			t.Errorf("%s: cmdline %q, want %s first", arch, line, console)
		}
	}
	if a, _ := lookupArch("arm64"); !slices.Equal(a.QEMUArgs, []string{"-M", "virt"}) || a.QEMU != "qemu-system-aarch64" {
		t.Errorf("arm64 boots %s %v, want qemu-system-aarch64 -M virt", a.QEMU, a.QEMUArgs)
	}
	if _, err := lookupArch("riscv64"); err == nil || !strings.Contains(err.Error(), "amd64, arm64") {
		t.Errorf("unknown architecture: %v, want the known ones listed", err)
	}
}

// A binary of the other architecture must be refused before it is packed
// into an initramfs whose guest could not run it.
func TestRequireStaticChecksMachine(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox-static is not installed")
	}
	other := elf.EM_AARCH64
	if hostArch == "arm64" {
		other = elf.EM_X86_64
	}
	if err := requireStatic("/bin/busybox", other); err == nil || !strings.Contains(err.Error(), "built for") {
		t.Errorf("host busybox taken for %v: %v", other, err)
	}
}

// -kernels names amd64 kernels by series and the others by SERIES-ARCH;
// -arches keeps only the architectures given.
func TestSelectKernelsByArch(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "kernels.conf")
	if err := os.WriteFile(conf, []byte("6.1 bookworm\n6.12 trixie\n6.1 bookworm arm64\n6.12 trixie arm64\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ids := func(kernels string, arches ...string) []string {
		t.Helper()
		specs, err := selectKernels(&config{conf: conf, kernels: kernels, arches: arches})
		if err != nil {
			t.Fatalf("-kernels %q -arches %v: %v", kernels, arches, err)
		}
		var out []string
		for _, s := range specs {
			out = append(out, s.ID())
		}
		return out
	}
	for _, tc := range []struct {
		kernels string
		arches  []string
		want    []string
	}{
		{"", nil, []string{"6.1", "6.12", "6.1-arm64", "6.12-arm64"}},
		{"6.1", nil, []string{"6.1"}},
		{"6.1-arm64,6.12", nil, []string{"6.1-arm64", "6.12"}},
		{"", []string{"arm64"}, []string{"6.1-arm64", "6.12-arm64"}},
		{"6.1,6.1-arm64", []string{"amd64"}, []string{"6.1"}},
	} {
		if got := ids(tc.kernels, tc.arches...); !slices.Equal(got, tc.want) {
			t.Errorf("-kernels %q -arches %v: %v, want %v", tc.kernels, tc.arches, got, tc.want)
		}
	}
	if _, err := selectKernels(&config{conf: conf, kernels: "5.10-arm64"}); err == nil {
		t.Error("a kernel not in the list must be an error")
	}
}
