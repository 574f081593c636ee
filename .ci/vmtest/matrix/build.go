package main

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// buildBinaries builds the static binaries for one architecture's guests
// (and, for the host's architecture, the host row). Prebuilt ones (flags)
// are used as given, after the same check.
func buildBinaries(ctx context.Context, repo, outDir, sstrace, tracerTest string, arch guestArch) (guestBins, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return guestBins{}, err
	}
	b := guestBins{
		agent:      filepath.Join(outDir, "agent"),
		sstrace:    sstrace,
		tracerTest: tracerTest,
	}
	steps := [][]string{{"build", "-o", b.agent, "./.ci/vmtest/agent"}}
	if b.sstrace == "" {
		b.sstrace = filepath.Join(outDir, "sstrace")
		steps = append(steps, []string{"build", "-o", b.sstrace, "./cmd/sstrace"})
	}
	if b.tracerTest == "" {
		b.tracerTest = filepath.Join(outDir, "tracer.test")
		steps = append(steps, []string{"test", "-c", "-o", b.tracerTest, "./pkg/tracer"})
	}
	for _, args := range steps {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = repo
		// Static: the guest has no libc, and the host must run the very
		// same binaries.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+arch.Name)
		if out, err := cmd.CombinedOutput(); err != nil {
			return guestBins{}, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, p := range []string{b.agent, b.sstrace, b.tracerTest} {
		abs, err := filepath.Abs(p)
		if err != nil {
			return guestBins{}, err
		}
		if err := requireStatic(abs, arch.Machine); err != nil {
			return guestBins{}, err
		}
	}
	b.sstrace, _ = filepath.Abs(b.sstrace)
	b.tracerTest, _ = filepath.Abs(b.tracerTest)
	return b, nil
}

// requireStatic fails for anything the guest could not run: not an ELF
// executable for its machine, or one that wants a dynamic loader or
// libraries.
func requireStatic(p string, machine elf.Machine) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	if f.Machine != machine {
		return fmt.Errorf("%s: built for %v, the guest is %v", p, f.Machine, machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (build it with CGO_ENABLED=0)", p)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("%s needs shared libraries %v (build it with CGO_ENABLED=0)", p, libs)
	}
	return nil
}
