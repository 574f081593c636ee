package daemon

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Capability is one capability the daemon uses, what for, and whether it
// can run without it.
type Capability struct {
	// Name is the capability's name (CAP_SYS_ADMIN, ...).
	Name string
	// Bit is its number.
	Bit uint
	// For says what it is needed for.
	For string
	// Without says what is lost without it; empty when the daemon cannot
	// work at all without it.
	Without string
}

// Capabilities are the capabilities the daemon needs, the smallest set
// that does everything (deploy/systemd/sstrace.service grants exactly
// these). CAP_BPF and CAP_PERFMON are not among them: CAP_SYS_ADMIN, which
// entering other namespaces needs anyway, implies both (the kernel's
// bpf_capable and perfmon_capable).
var Capabilities = []Capability{
	{Name: "CAP_SYS_ADMIN", Bit: unix.CAP_SYS_ADMIN,
		For: "loading the tracer (as CAP_BPF and CAP_PERFMON) and entering every network namespace to seed the table"},
	{Name: "CAP_SYS_PTRACE", Bit: unix.CAP_SYS_PTRACE,
		For: "reading a client's network namespace and any process's descriptors (/proc/PID/ns/net, /proc/PID/fd)"},
	{Name: "CAP_NET_ADMIN", Bit: unix.CAP_NET_ADMIN,
		For:     "socket marks in sock_diag answers, and attaching the cgroup cookie programs older kernels need",
		Without: "ss --socket -e shows no fwmark, and on kernels before 5.12 the cgroup programs that give events their cookies cannot attach"},
	{Name: "CAP_DAC_READ_SEARCH", Bit: unix.CAP_DAC_READ_SEARCH,
		For:     "naming an owner's cgroup from its id (open_by_handle_at)",
		Without: "the cgroups and containers of owners seen by events are not named"},
}

// CheckCapabilities reads the process's effective capabilities and
// returns an error naming each essential one it lacks, and a line for each
// other one it lacks saying what is lost.
func CheckCapabilities() (warnings []string, err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("capget: %w", err)
	}
	var missing []string
	for _, c := range Capabilities {
		if data[c.Bit/32].Effective&(1<<(c.Bit%32)) != 0 {
			continue
		}
		if c.Without == "" {
			missing = append(missing, fmt.Sprintf("%s (%s)", c.Name, c.For))
		} else {
			warnings = append(warnings, fmt.Sprintf("no %s: %s", c.Name, c.Without))
		}
	}
	if len(missing) > 0 {
		return warnings, errors.New("the daemon needs " + strings.Join(missing, " and ") +
			": run it as root or grant them (deploy/systemd/sstrace.service)")
	}
	return warnings, nil
}
