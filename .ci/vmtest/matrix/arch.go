package main

import (
	"debug/elf"
	"fmt"
	"runtime"
	"sort"
	"strings"
)

// guestArch is everything that differs between the guests' architectures:
// the binaries' target, the emulator and its machine, and the console.
type guestArch struct {
	// Name is both the Debian architecture (kernels.conf's third column,
	// apt's APT::Architecture, the -cloud-NAME kernel flavour) and GOARCH:
	// the two agree for every architecture listed here.
	Name    string
	Machine elf.Machine // of every binary put into the guest
	QEMU    string      // default emulator (-qemu, -qemu-arm64)
	// QEMUArgs choose the machine model: the default PC for x86, the
	// generic `virt` board for arm64 (PL011 UART, virtio-mmio, PSCI for
	// power-off; -kernel boots an arm64 Image without firmware).
	QEMUArgs []string
	Console  string // the first serial port's device in the guest
	// ConsoleOption must be =y in the kernel, or the VM reports nothing.
	ConsoleOption string
}

var guestArches = map[string]guestArch{
	"amd64": {Name: "amd64", Machine: elf.EM_X86_64, QEMU: "qemu-system-x86_64",
		Console: "ttyS0", ConsoleOption: "CONFIG_SERIAL_8250_CONSOLE"},
	"arm64": {Name: "arm64", Machine: elf.EM_AARCH64, QEMU: "qemu-system-aarch64",
		QEMUArgs: []string{"-M", "virt"},
		Console:  "ttyAMA0", ConsoleOption: "CONFIG_SERIAL_AMBA_PL011_CONSOLE"},
}

// hostArch is the architecture of this machine: its binaries also run the
// host row, and its busybox and tools are copied into its guests.
var hostArch = runtime.GOARCH

// lookupArch returns a known guest architecture or says which are known.
func lookupArch(name string) (guestArch, error) {
	a, ok := guestArches[name]
	if !ok {
		return guestArch{}, fmt.Errorf("architecture %q is not one of %s", name, strings.Join(archNames(), ", "))
	}
	return a, nil
}

func archNames() []string {
	var n []string
	for name := range guestArches {
		n = append(n, name)
	}
	sort.Strings(n)
	return n
}
