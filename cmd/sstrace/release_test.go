package main

import (
	"bufio"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// The release binaries, built once per test run by `make release` into
// the test binary's directory (removed by TestMain): TestRelease checks
// them, TestContainerImage packs them.
var (
	releaseOnce sync.Once
	releaseDir  string
	releaseErr  error
)

// releaseArches are make release's RELEASE_ARCHES with their ELF machines.
var releaseArches = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// releaseBuild runs `make release` once and returns its DIST directory.
func releaseBuild(t *testing.T) string {
	t.Helper()
	sstraceBinary(t) // makes binDir
	releaseOnce.Do(func() {
		releaseDir = filepath.Join(binDir, "dist")
		if out, err := exec.Command("make", "-C", "../..", "release", "DIST="+releaseDir).CombinedOutput(); err != nil {
			releaseErr = err
			t.Logf("make release:\n%s", out)
		}
	})
	if releaseErr != nil {
		t.Fatalf("make release: %v", releaseErr)
	}
	return releaseDir
}

// TestRelease: make release leaves a static, trimmed binary per
// architecture and a SHA256SUMS that sha256sum -c verifies and that names
// exactly them; the binary of this machine's architecture runs `version`,
// stamped with the checkout's revision when built from a clone.
func TestRelease(t *testing.T) {
	dist := releaseBuild(t)
	check := exec.Command("sha256sum", "--strict", "-c", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, out)
	}
	sums, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	listed := map[string]bool{}
	for sc := bufio.NewScanner(sums); sc.Scan(); {
		if f := strings.Fields(sc.Text()); len(f) == 2 {
			listed[f[1]] = true
		}
	}
	for arch, machine := range releaseArches {
		name := "sstrace-linux-" + arch
		if !listed[name] {
			t.Errorf("SHA256SUMS does not list %s: %v", name, listed)
		}
		path := filepath.Join(dist, name)
		f, err := elf.Open(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		libs, _ := f.ImportedLibraries()
		interp := false
		for _, p := range f.Progs {
			interp = interp || p.Type == elf.PT_INTERP
		}
		f.Close()
		if f.Machine != machine || interp || len(libs) > 0 {
			t.Errorf("%s: machine %v, interpreter %v, libraries %v: want a static %v binary", name, f.Machine, interp, libs, machine)
		}
		bi, err := buildinfo.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" || settings["GOARCH"] != arch {
			t.Errorf("%s built with %v", name, settings)
		}
	}

	out, err := exec.Command(filepath.Join(dist, "sstrace-linux-"+runtime.GOARCH), "version", "--json").Output()
	if err != nil {
		t.Fatalf("sstrace-linux-%s version: %v", runtime.GOARCH, err)
	}
	var v struct {
		Module   string            `json:"module"`
		Revision string            `json:"revision"`
		Modified bool              `json:"modified"`
		Go       string            `json:"go"`
		Objects  map[string]string `json:"bpf_objects"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Go != runtime.Version() || len(v.Objects) != 2 {
		t.Errorf("version --json: %v %s", err, out)
	}
	// Go stamps the revision only in a clone (a .git directory); a git
	// worktree's .git is a file, and its builds say "(devel)".
	if st, err := os.Stat("../../.git"); err == nil && st.IsDir() {
		head, err := exec.Command("git", "-C", "../..", "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatal(err)
		}
		rev := strings.TrimSpace(string(head))
		if v.Revision != rev || !strings.Contains(v.Module, rev[:12]) {
			t.Errorf("version: module %q revision %q, want the checkout's %s", v.Module, v.Revision, rev)
		}
	} else {
		t.Logf("not a clone (a worktree?): the revision stamp is not checked; module %q", v.Module)
	}
}
