package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The real agent drives a real Go test binary and a stand-in `sstrace
// status` here, and the parser reads what they printed: this pins the
// contract between the agent, the go test -v output of the Go toolchain in
// use, and the parser, without a VM.

const fakeTests = `package fake

import (
	"os"
	"testing"
)

func TestE2EFirst(t *testing.T) {
	t.Log("PASS") // an indented log line that must not read as the summary
	t.Run("sub", func(t *testing.T) {})
}

func TestE2ESecond(t *testing.T) {
	t.Log("second runs with hook", os.Getenv("SSTRACE_TEST_HOOK"), "CI", os.Getenv("CI"))
	if os.Getenv("SSTRACE_TEST_HOOK") == os.Getenv("FAKE_FAIL_HOOK") {
		t.Fatal("forced failure for this hook")
	}
	if os.Getenv("SSTRACE_TEST_HOOK") == os.Getenv("FAKE_PANIC_HOOK") {
		panic("forced panic")
	}
}

func TestOther(t *testing.T) { t.Fatal("not selected by -test.run E2E, must never run") }
`

const fakeStatus = `#!/bin/sh
[ "$1 $2" = "status --json" ] || { echo "usage" >&2; exit 64; }
echo '{"kernel":"k","btf":true,"hooks":[{"name":"tp_btf","available":true},{"name":"tracepoint","available":true},{"name":"fentry","available":false,"reason":"no trampoline here"},{"name":"kprobe","available":true}],"chosen":"tp_btf"}'
exit ${FAKE_STATUS_EXIT:-0}
`

// buildAgentFixture compiles the agent and the fake test binary once.
func buildAgentFixture(t *testing.T) (agent, tracer, status string) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go toolchain not in PATH")
	}
	dir := t.TempDir()
	agent = filepath.Join(dir, "agent")
	if out, err := exec.Command("go", "build", "-o", agent, "../agent").CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	src := filepath.Join(dir, "fake")
	must(t, os.MkdirAll(src, 0o755))
	must(t, os.WriteFile(filepath.Join(src, "go.mod"), []byte("module fake\n\ngo 1.21\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "fake_test.go"), []byte(fakeTests), 0o644))
	tracer = filepath.Join(dir, "tracer.test")
	cmd := exec.Command("go", "test", "-c", "-o", tracer, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fake tests: %v\n%s", err, out)
	}
	status = filepath.Join(dir, "sstrace")
	must(t, os.WriteFile(status, []byte(fakeStatus), 0o755))
	return agent, tracer, status
}

func runAgent(t *testing.T, agent, tracer, status string, env ...string) []byte {
	t.Helper()
	cmd := exec.Command(agent, "-sstrace", status, "-tracer", tracer, "-hooks", strings.Join(allHooks, ","))
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("agent: %v\n%s", err, out)
	}
	return out
}

func TestAgentAndParser(t *testing.T) {
	agent, tracer, status := buildAgentFixture(t)

	t.Run("pass, fail and n/a", func(t *testing.T) {
		out := runAgent(t, agent, tracer, status, "FAKE_FAIL_HOOK=tracepoint", "FAKE_PANIC_HOOK=kprobe")
		r := parseRun(out, allHooks)
		if len(r.Problems) > 0 || !r.Done {
			t.Fatalf("problems %v, done %v in:\n%s", r.Problems, r.Done, out)
		}
		if !strings.Contains(r.Status, `"chosen":"tp_btf"`) {
			t.Errorf("status output not kept: %q", r.Status)
		}
		tp := r.Cells["tp_btf"]
		if tp.Outcome != cellPass || tp.Passed != 2 || tp.Failed != 0 {
			t.Errorf("tp_btf = %+v, want pass with 2 tests", tp)
		}
		if !slices.ContainsFunc(tp.Output, func(l string) bool { return strings.Contains(l, "hook tp_btf CI true") }) {
			t.Errorf("tp_btf output does not show the forced hook and CI=true:\n%s", strings.Join(tp.Output, "\n"))
		}
		tr := r.Cells["tracepoint"]
		if tr.Outcome != cellFail || tr.Failed != 1 || !slices.Equal(tr.FailedTests, []string{"TestE2ESecond"}) {
			t.Errorf("tracepoint = %+v, want FAIL of TestE2ESecond", tr)
		}
		fo := strings.Join(failingOutput(tr.Output), "\n")
		if !strings.Contains(fo, "forced failure for this hook") || strings.Contains(fo, "TestE2EFirst") {
			t.Errorf("failing output should hold TestE2ESecond's lines only:\n%s", fo)
		}
		if fe := r.Cells["fentry"]; fe.Outcome != cellNA || fe.Reason != "no trampoline here" {
			t.Errorf("fentry = %+v, want n/a with the status reason", fe)
		}
		kp := r.Cells["kprobe"]
		if kp.Outcome != cellFail || !strings.Contains(kp.Reason, "exit status 2") {
			t.Errorf("kprobe = %+v, want FAIL with exit status 2 (panic)", kp)
		}
		if fo := strings.Join(failingOutput(kp.Output), "\n"); !strings.Contains(fo, "panic: forced panic") {
			t.Errorf("panic not in the failing output:\n%s", fo)
		}
	})

	t.Run("no test matches", func(t *testing.T) {
		cmd := exec.Command(agent, "-sstrace", status, "-tracer", tracer, "-hooks", "tp_btf", "-run", "NoSuchTest")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("agent: %v\n%s", err, out)
		}
		c := parseRun(out, []string{"tp_btf"}).Cells["tp_btf"]
		if c.Outcome != cellFail || !strings.Contains(c.Reason, "no tests ran") {
			t.Errorf("cell = %+v, want FAIL: no tests ran", c)
		}
	})

	t.Run("status exits non-zero", func(t *testing.T) {
		out := runAgent(t, agent, tracer, status, "FAKE_STATUS_EXIT=2")
		r := parseRun(out, allHooks)
		if len(r.Problems) == 0 || !strings.Contains(r.Problems[0], "exit status 2") {
			t.Errorf("problems = %v, want the status exit reported", r.Problems)
		}
		if r.Cells["fentry"].Outcome != cellNA || r.Cells["tp_btf"].Outcome != cellPass {
			t.Errorf("cells should still follow the JSON: %+v %+v", r.Cells["fentry"], r.Cells["tp_btf"])
		}
	})

	t.Run("status missing", func(t *testing.T) {
		out := runAgent(t, agent, tracer, filepath.Join(t.TempDir(), "absent"))
		r := parseRun(out, allHooks)
		for _, h := range allHooks {
			if c := r.Cells[h]; c.Outcome != cellFail || !strings.Contains(c.Reason, "sstrace status") {
				t.Errorf("%s = %+v, want FAIL naming sstrace status", h, c)
			}
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
