// Command agent runs the tracer's end-to-end tests once per kernel hook and
// reports each result as a marker line that the matrix runner parses. It is
// the part of `make vmtest` that runs inside the test VM (started by the
// initramfs /init) and, unchanged, on the host, so both report alike.
//
//	agent -sstrace /bin/sstrace -tracer /bin/tracer.test
//
// Output, one marker per line, with the test output streamed in between:
//
//	@@VMTEST {"event":"start","kernel":"6.1.0-56-cloud-amd64",...}@@
//	@@VMTEST {"event":"status","exit":0,"output":"{...}"}@@
//	@@VMTEST {"event":"begin","hook":"tp_btf"}@@
//	=== RUN   TestE2E...            (go test -test.v output)
//	@@VMTEST {"event":"end","hook":"tp_btf","result":"pass","exit":0,"seconds":3.2}@@
//	@@VMTEST {"event":"end","hook":"kprobe","result":"unavailable","reason":"..."}@@
//	@@VMTEST {"event":"done"}@@
//
// The agent decides availability from `sstrace status --json`, never on its
// own: a hook the status reports available is tested, and a test that cannot
// load it fails (CI=true), so a broken detector cannot hide a broken hook.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// markerPrefix and markerSuffix frame every machine-readable line; the
// runner ignores everything else on the console except the test output
// between a hook's begin and end markers.
const (
	markerPrefix = "@@VMTEST "
	markerSuffix = "@@"
)

// allHooks is the order the cells are run in, cheapest fallback last.
var allHooks = []string{"tp_btf", "tracepoint", "fentry", "kprobe"}

// marker is the payload of one marker line. Empty fields are left out so the
// lines stay short on a slow serial console.
type marker struct {
	Event   string  `json:"event"`
	Kernel  string  `json:"kernel,omitempty"`
	Hook    string  `json:"hook,omitempty"`
	Result  string  `json:"result,omitempty"`
	Reason  string  `json:"reason,omitempty"`
	Exit    *int    `json:"exit,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
	Output  string  `json:"output,omitempty"`
	// Uptime (seconds since boot) on start and done shows where a VM's
	// time went: booting or testing.
	Uptime float64 `json:"uptime,omitempty"`
}

// status is the part of `sstrace status --json` the agent relies on.
type status struct {
	Kernel string `json:"kernel"`
	BTF    bool   `json:"btf"`
	Hooks  []struct {
		Name      string `json:"name"`
		Available bool   `json:"available"`
		Reason    string `json:"reason"`
	} `json:"hooks"`
	Chosen string `json:"chosen"`
}

type options struct {
	sstrace     string
	tracer      string
	run         string
	hooks       []string
	testTimeout time.Duration
	out         io.Writer
}

func main() {
	var o options
	var hooks string
	flag.StringVar(&o.sstrace, "sstrace", "/bin/sstrace", "path of the sstrace binary (for `status --json`)")
	flag.StringVar(&o.tracer, "tracer", "/bin/tracer.test", "path of the compiled pkg/tracer test binary")
	flag.StringVar(&o.run, "run", "E2E", "-test.run pattern passed to the test binary")
	flag.StringVar(&hooks, "hooks", strings.Join(allHooks, ","), "comma-separated hooks to test, in order")
	flag.DurationVar(&o.testTimeout, "test-timeout", 4*time.Minute, "-test.timeout for one hook's run")
	flag.Parse()
	o.out = os.Stdout
	for _, h := range strings.Split(hooks, ",") {
		if h = strings.TrimSpace(h); h != "" {
			o.hooks = append(o.hooks, h)
		}
	}
	if err := run(context.Background(), o); err != nil {
		emit(o.out, marker{Event: "error", Reason: err.Error()})
		os.Exit(1)
	}
}

// run reports every hook in o.hooks. A failing cell is reported, not
// returned: only a failure of the agent itself is an error.
func run(ctx context.Context, o options) error {
	if len(o.hooks) == 0 {
		return errors.New("no hooks given")
	}
	emit(o.out, marker{Event: "start", Kernel: kernelRelease(), Uptime: uptime()})

	st, statusErr := readStatus(ctx, o)
	for _, hook := range o.hooks {
		if statusErr != nil {
			emit(o.out, marker{Event: "end", Hook: hook, Result: "fail", Reason: statusErr.Error()})
			continue
		}
		avail, reason, err := hookAvailability(st, hook)
		if err != nil {
			emit(o.out, marker{Event: "end", Hook: hook, Result: "fail", Reason: err.Error()})
			continue
		}
		if !avail {
			emit(o.out, marker{Event: "end", Hook: hook, Result: "unavailable", Reason: reason})
			continue
		}
		runHook(ctx, o, hook)
	}
	emit(o.out, marker{Event: "done", Uptime: uptime()})
	return nil
}

// readStatus runs `sstrace status --json`, echoes its output in a marker
// (so the runner can show what the detector said) and decodes it. sstrace
// exits non-zero, still printing the JSON, when no hook works: the hooks are
// then reported from the JSON (as n/a) and the run is marked as an error,
// because a kernel of the matrix on which nothing traces is a failure.
func readStatus(ctx context.Context, o options) (*status, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, o.sstrace, "status", "--json")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	code := exitCode(runErr)
	emit(o.out, marker{Event: "status", Exit: &code, Output: stdout.String() + stderr.String()})
	st, err := parseStatus(stdout.Bytes())
	if runErr != nil {
		msg := fmt.Sprintf("sstrace status --json: %v: %s", runErr, strings.TrimSpace(stderr.String()))
		if err != nil {
			return nil, errors.New(msg)
		}
		emit(o.out, marker{Event: "error", Reason: msg})
	}
	return st, err
}

// parseStatus decodes the status JSON and checks the fields the agent needs
// are there, so that a renamed field fails loudly instead of reading as
// "not available".
func parseStatus(b []byte) (*status, error) {
	var st status
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("sstrace status --json: decode: %w", err)
	}
	if len(st.Hooks) == 0 {
		return nil, errors.New("sstrace status --json: no \"hooks\" listed")
	}
	for i, h := range st.Hooks {
		if h.Name == "" {
			return nil, fmt.Errorf("sstrace status --json: hook #%d has no \"name\"", i)
		}
	}
	return &st, nil
}

// hookAvailability looks a hook up in the status. A hook the status does
// not mention is an error, never silently "unavailable".
func hookAvailability(st *status, hook string) (bool, string, error) {
	for _, h := range st.Hooks {
		if h.Name == hook {
			if !h.Available && strings.TrimSpace(h.Reason) == "" {
				return false, "", fmt.Errorf("sstrace status: hook %s unavailable without a reason", hook)
			}
			return h.Available, h.Reason, nil
		}
	}
	return false, "", fmt.Errorf("sstrace status: hook %s not listed", hook)
}

// runHook runs the test binary with the hook forced and streams its output
// between the begin and end markers.
func runHook(ctx context.Context, o options, hook string) {
	emit(o.out, marker{Event: "begin", Hook: hook})
	// The binary's own -test.timeout makes a hung test print its goroutines;
	// the context is the backstop should the binary ignore it.
	ctx, cancel := context.WithTimeout(ctx, o.testTimeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.tracer, "-test.v", "-test.count=1",
		"-test.run", o.run, "-test.timeout", o.testTimeout.String())
	cmd.Env = append(os.Environ(), "CI=true", "SSTRACE_TEST_HOOK="+hook)
	cmd.Stdout, cmd.Stderr = o.out, o.out
	// Test-relative paths (testdata) resolve next to the binary, as under go test.
	cmd.Dir = dirOf(o.tracer)
	start := time.Now()
	err := cmd.Run()
	secs := time.Since(start).Seconds()
	code := exitCode(err)
	m := marker{Event: "end", Hook: hook, Exit: &code, Seconds: round2(secs), Result: "pass"}
	if err != nil {
		m.Result, m.Reason = "fail", err.Error()
	}
	// A newline first: the test output may end without one.
	fmt.Fprintln(o.out)
	emit(o.out, m)
}

func emit(w io.Writer, m marker) {
	b, err := json.Marshal(m)
	if err != nil {
		// Cannot happen for this struct; say so rather than print nothing.
		b = []byte(fmt.Sprintf(`{"event":"error","reason":%q}`, err.Error()))
	}
	fmt.Fprintf(w, "%s%s%s\n", markerPrefix, b, markerSuffix)
}

// exitCode maps a Run error to the exit status (-1 when it did not exit).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i]
	}
	return "."
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// uptime reads /proc/uptime; 0 when it cannot.
func uptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	var up float64
	if _, err := fmt.Sscanf(string(b), "%f", &up); err != nil {
		return 0
	}
	return up
}
