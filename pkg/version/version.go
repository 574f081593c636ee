// Package version says which sstrace is running: the module version and VCS
// revision the Go toolchain stamped into the binary, the Go version, and a
// hash of each BPF object it embeds, so that two hosts can tell whether
// they load the same kernel programs.
package version

import (
	"fmt"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
)

// Info is what `sstrace version` prints.
type Info struct {
	// Module is the module version ("(devel)" for a build from a
	// checkout), Revision and Time the VCS commit and its time ("" when
	// the build was not stamped: go run, -buildvcs=false), Modified that
	// the checkout had uncommitted changes.
	Module   string `json:"module"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	// Go is the toolchain that built the binary.
	Go string `json:"go"`
	// Objects maps each embedded BPF object to its SHA-256.
	Objects map[string]string `json:"bpf_objects"`
}

// Read returns the running binary's Info; objects names each embedded BPF
// object's hash (the packages that embed them provide it).
func Read(objects map[string]string) Info {
	inf := Info{Module: "unknown", Go: runtime.Version(), Objects: objects}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return inf
	}
	inf.Module = bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			inf.Revision = s.Value
		case "vcs.time":
			inf.Time = s.Value
		case "vcs.modified":
			inf.Modified = s.Value == "true"
		}
	}
	return inf
}

// Short is one line: module version and revision.
func (i Info) Short() string {
	rev := i.Revision
	if rev == "" {
		rev = "revision unknown"
	} else if len(rev) > 12 {
		rev = rev[:12]
	}
	if i.Modified {
		rev += "+modified"
	}
	return fmt.Sprintf("sstrace %s (%s, %s)", i.Module, rev, i.Go)
}

// String is Short and a line per BPF object.
func (i Info) String() string {
	var b strings.Builder
	b.WriteString(i.Short())
	b.WriteByte('\n')
	for _, name := range slices.Sorted(maps.Keys(i.Objects)) {
		fmt.Fprintf(&b, "bpf %s sha256:%s\n", name, i.Objects[name])
	}
	return b.String()
}
