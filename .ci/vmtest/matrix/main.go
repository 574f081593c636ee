// Command matrix is `make vmtest`: it runs the tracer's end-to-end tests
// on the host and in VMs booting Debian's cloud kernels (5.10, 6.1, 6.12 by
// default, for amd64 and arm64, see ../kernels.conf), once per hook
// (tp_btf, tracepoint, fentry, kprobe), and prints a kernel × hook matrix.
//
//	go run ./.ci/vmtest/matrix                       # everything
//	go run ./.ci/vmtest/matrix -kernels 6.1          # one kernel, plus the host
//	go run ./.ci/vmtest/matrix -kernels 6.1-arm64    # its arm64 build
//	go run ./.ci/vmtest/matrix -arches amd64         # the amd64 guests only
//	go run ./.ci/vmtest/matrix -host=false           # VMs only
//
// For each kernel it fetches linux-image-*-cloud-ARCH-unsigned with a
// private apt configuration (cached in .cache/vmtest), builds a busybox
// initramfs holding the static test binaries (built for the guest's
// architecture) and ../agent, boots it under qemu TCG (qemu-system-x86_64,
// or qemu-system-aarch64 -M virt) and reads the agent's @@VMTEST markers
// off the serial console.
// It exits non-zero on any failed cell, on a VM that did not report and on
// anything it cannot parse: a cell is pass only when its marker and the
// test binary's PASS line were both seen.
package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

//go:embed init.sh
var initScript []byte

var allHooks = []string{"tp_btf", "tracepoint", "fentry", "kprobe"}

type config struct {
	repo         string
	conf         string
	kernels      string
	arches       []string // none: every architecture in -conf
	qemu         map[string]string
	hooks        []string
	host         bool
	sstrace      string
	tracerTest   string
	testRun      string
	parallel     int
	vmTimeout    time.Duration
	testTimeout  time.Duration
	cacheDir     string
	fetch        fetchOptions
	boot         bootOptions
	hostTools    []string
	refresh      bool
	prepareLimit time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		os.Exit(2)
	}
	ok, err := runMatrix(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("vmtest", flag.ContinueOnError)
	c := &config{}
	var hooks, tools, arches string
	c.qemu = map[string]string{}
	fs.StringVar(&c.repo, "repo", ".", "repository root (holds go.mod)")
	fs.StringVar(&c.conf, "conf", ".ci/vmtest/kernels.conf", "kernel list, relative to -repo")
	fs.StringVar(&c.kernels, "kernels", "", "comma-separated kernels to run, by series (amd64) or SERIES-ARCH, e.g. 6.1,6.1-arm64 (default: all in -conf; \"none\" for the host only)")
	fs.StringVar(&arches, "arches", "", "comma-separated guest architectures to boot, of those in -conf (default: all)")
	fs.StringVar(&hooks, "hooks", strings.Join(allHooks, ","), "comma-separated hooks")
	fs.BoolVar(&c.host, "host", true, "also run the matrix row of this host")
	fs.StringVar(&c.sstrace, "sstrace", "", "prebuilt static sstrace binary (default: build ./cmd/sstrace)")
	fs.StringVar(&c.tracerTest, "tracer-test", "", "prebuilt static test binary (default: go test -c ./pkg/tracer)")
	fs.StringVar(&c.testRun, "run", "E2E", "-test.run pattern")
	fs.IntVar(&c.parallel, "parallel", 3, "VMs booted at once")
	fs.DurationVar(&c.vmTimeout, "vm-timeout", 8*time.Minute, "hard limit for one VM, boot to power-off")
	fs.DurationVar(&c.testTimeout, "test-timeout", 4*time.Minute, "-test.timeout for one hook's tests")
	fs.StringVar(&c.cacheDir, "cache", ".cache/vmtest", "download and build cache, relative to -repo")
	fs.StringVar(&c.fetch.mirror, "mirror", "http://deb.debian.org/debian", "Debian archive")
	fs.StringVar(&c.fetch.securityMirror, "security-mirror", "http://deb.debian.org/debian-security", "Debian security archive")
	fs.DurationVar(&c.fetch.maxAge, "max-age", 24*time.Hour, "reuse a kernel resolved this recently without asking apt")
	fs.BoolVar(&c.refresh, "refresh", false, "ask apt for the newest kernels even if the cache is fresh")
	for _, name := range archNames() {
		a := guestArches[name]
		flagName := "qemu-" + name
		if name == "amd64" {
			flagName = "qemu" // as before there were other architectures
		}
		c.qemu[name] = a.QEMU
		fs.Func(flagName, "qemu binary for "+name+" guests (default "+a.QEMU+")", func(v string) error {
			c.qemu[name] = v
			return nil
		})
	}
	fs.StringVar(&c.boot.accel, "accel", "tcg,thread=single", "qemu -accel (KVM fails in this VM; see README on thread=single)")
	fs.StringVar(&c.boot.cpu, "cpu", "max", "guest CPU model (qemu -cpu)")
	fs.StringVar(&c.boot.memory, "memory", "1024", "guest memory (qemu -m)")
	fs.IntVar(&c.boot.cpus, "smp", 2, "guest CPUs")
	fs.StringVar(&c.boot.extraArgs, "append", "", "extra kernel command line arguments, e.g. loglevel=7")
	fs.StringVar(&tools, "host-tools", "ss,ip", "host binaries copied into the guest with their libraries")
	fs.DurationVar(&c.prepareLimit, "prepare-timeout", 10*time.Minute, "limit for fetching kernels and building")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	known := map[string]bool{}
	for _, h := range allHooks {
		known[h] = true
	}
	for _, h := range splitList(hooks) {
		if !known[h] {
			return nil, fmt.Errorf("-hooks: unknown hook %q (want some of %s)", h, strings.Join(allHooks, ","))
		}
		c.hooks = append(c.hooks, h)
	}
	if len(c.hooks) == 0 {
		return nil, errors.New("-hooks: none given")
	}
	if c.parallel < 1 {
		return nil, fmt.Errorf("-parallel %d: want at least 1", c.parallel)
	}
	if c.testTimeout >= c.vmTimeout {
		return nil, fmt.Errorf("-test-timeout %s must be below -vm-timeout %s", c.testTimeout, c.vmTimeout)
	}
	if c.refresh {
		c.fetch.maxAge = 0
	}
	for _, a := range splitList(arches) {
		if _, err := lookupArch(a); err != nil {
			return nil, fmt.Errorf("-arches: %w", err)
		}
		c.arches = append(c.arches, a)
	}
	c.hostTools = splitList(tools)
	var err error
	if c.repo, err = filepath.Abs(c.repo); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(c.cacheDir) {
		c.cacheDir = filepath.Join(c.repo, c.cacheDir)
	}
	if !filepath.IsAbs(c.conf) {
		c.conf = filepath.Join(c.repo, c.conf)
	}
	c.fetch.cacheDir = c.cacheDir
	c.boot.timeout = c.vmTimeout
	c.boot.hooks = c.hooks
	c.boot.testRun = c.testRun
	c.boot.testTimeout = c.testTimeout
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

var logStart = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(logStart).Seconds(), fmt.Sprintf(format, args...))
}

// row is one line of the matrix: the host or one kernel.
type row struct {
	label   string
	release string // kernel release expected (VMs) or seen (host)
	kernel  *kernel
	err     error // preparing or booting failed: every cell fails
	boot    *bootResult
	run     *run
	notes   []string
}

// selectKernels reads kernels.conf and keeps the kernels asked for, of the
// architectures asked for.
func selectKernels(c *config) ([]kernelSpec, error) {
	f, err := os.Open(c.conf)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	specs, err := parseKernelsConf(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.conf, err)
	}
	if c.kernels == "none" {
		return nil, nil
	}
	if c.kernels != "" {
		var picked []kernelSpec
		for _, want := range splitList(c.kernels) {
			found := false
			for _, s := range specs {
				if s.ID() == want {
					picked = append(picked, s)
					found = true
				}
			}
			if !found {
				return nil, fmt.Errorf("-kernels: %s is not in %s", want, c.conf)
			}
		}
		specs = picked
	}
	if len(c.arches) == 0 {
		return specs, nil
	}
	var out []kernelSpec
	for _, s := range specs {
		if slices.Contains(c.arches, s.Arch) {
			out = append(out, s)
		}
	}
	return out, nil
}

func runMatrix(ctx context.Context, c *config) (bool, error) {
	start := time.Now()
	if _, err := os.Stat(filepath.Join(c.repo, "go.mod")); err != nil {
		return false, fmt.Errorf("-repo %s: no go.mod: %w", c.repo, err)
	}
	specs, err := selectKernels(c)
	if err != nil {
		return false, err
	}
	if len(specs) == 0 && !c.host {
		return false, errors.New("nothing to run: no kernels and -host=false")
	}
	// The architectures to build for: the host's for the host row, and
	// every booted kernel's, in kernels.conf's order.
	var arches []string
	if c.host {
		arches = append(arches, hostArch)
	}
	for _, s := range specs {
		if !slices.Contains(arches, s.Arch) {
			arches = append(arches, s.Arch)
		}
	}
	var tools []string
	if len(specs) > 0 {
		tools = []string{"dpkg-deb", "apt-get", "apt-cache"}
	}
	for _, s := range specs {
		if !slices.Contains(tools, c.qemu[s.Arch]) {
			tools = append(tools, c.qemu[s.Arch])
		}
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return false, fmt.Errorf("%s not found (run .ci/vmtest/run.sh, which installs it)", tool)
		}
	}
	c.fetch.log = logf
	if err := os.MkdirAll(filepath.Join(c.cacheDir, "logs"), 0o755); err != nil {
		return false, err
	}

	// Kernels download while the binaries build.
	pctx, cancel := context.WithTimeout(ctx, c.prepareLimit)
	defer cancel()
	rows := make([]*row, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		rows[i] = &row{label: s.ID()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := prepareKernel(pctx, s, c.fetch)
			rows[i].kernel, rows[i].err = k, err
			if k != nil {
				rows[i].label = k.Label()
				rows[i].release = k.Release
				rows[i].notes = append(rows[i].notes, k.Notes...)
			}
		}()
	}
	// A foreign architecture's busybox comes from the suite of its first
	// kernel, fetched beside the kernels.
	busyboxes := map[string]string{hostArch: "/bin/busybox"}
	var busyboxErr error
	var mu sync.Mutex
	for _, a := range arches {
		i := slices.IndexFunc(specs, func(s kernelSpec) bool { return s.Arch == a })
		if a == hostArch || i < 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			bin, note, err := foreignBusybox(pctx, guestArches[a], specs[i].Suite, c.fetch)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				busyboxErr = errors.Join(busyboxErr, err)
				return
			}
			busyboxes[a] = bin
			logf("busybox-static:%s: %s", a, note)
		}()
	}
	bins := map[string]guestBins{}
	for _, a := range arches {
		logf("building static binaries for %s", a)
		sstrace, tracerTest, outDir := c.sstrace, c.tracerTest, filepath.Join(c.cacheDir, "bin")
		if a != hostArch {
			// Prebuilt binaries are the host's; the others are built.
			sstrace, tracerTest, outDir = "", "", filepath.Join(outDir, a)
		}
		b, err := buildBinaries(pctx, c.repo, outDir, sstrace, tracerTest, guestArches[a])
		if err != nil {
			wg.Wait()
			return false, err
		}
		bins[a] = b
	}
	wg.Wait()
	if busyboxErr != nil {
		return false, busyboxErr
	}
	logf("binaries ready; kernels ready")

	var all []*row
	if c.host {
		all = append(all, runHost(ctx, c, bins[hostArch]))
	}

	if len(specs) > 0 {
		bases := map[string]*archive{}
		for _, a := range arches {
			base, notes, err := baseArchive(ctx, bins[a], initScript, c.hostTools, guestArches[a], busyboxes[a])
			if err != nil {
				return false, fmt.Errorf("initramfs (%s): %w", a, err)
			}
			for _, n := range notes {
				logf("initramfs (%s): %s", a, n)
			}
			bases[a] = base
		}
		sem := make(chan struct{}, c.parallel)
		for _, r := range rows {
			if r.err != nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				bootRow(ctx, c, bases[r.kernel.Spec.Arch], r)
			}()
		}
		wg.Wait()
		all = append(all, rows...)
	}
	ok := report(os.Stdout, all, c.hooks, time.Since(start))
	return ok, nil
}

// runHost runs the agent on this machine, as the guests' /init does.
func runHost(ctx context.Context, c *config, bins guestBins) *row {
	r := &row{label: "host"}
	logf("host: running the tests for %s", strings.Join(c.hooks, ","))
	ctx, cancel := context.WithTimeout(ctx, c.vmTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bins.agent, "-sstrace", bins.sstrace, "-tracer", bins.tracerTest,
		"-hooks", strings.Join(c.hooks, ","), "-run", c.testRun, "-test-timeout", c.testTimeout.String())
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	logPath := filepath.Join(c.cacheDir, "logs", "host.log")
	_ = os.WriteFile(logPath, out.Bytes(), 0o644)
	r.boot = &bootResult{Console: out.Bytes(), Duration: time.Since(start)}
	if err != nil {
		r.boot.Err = fmt.Errorf("agent: %w", err)
	}
	r.run = parseRun(out.Bytes(), c.hooks)
	r.release = r.run.Kernel
	r.notes = append(r.notes, "log: "+logPath)
	logf("host: finished in %.1fs", r.boot.Duration.Seconds())
	return r
}

// bootRow builds the kernel's initramfs, boots it and parses the console.
func bootRow(ctx context.Context, c *config, base *archive, r *row) {
	k := r.kernel
	a, err := withModules(ctx, base, k)
	if err != nil {
		r.err = fmt.Errorf("initramfs: %w", err)
		return
	}
	initrd := filepath.Join(c.cacheDir, "initrd-"+k.Spec.ID()+".cpio.gz")
	if err := a.writeGzip(initrd); err != nil {
		r.err = fmt.Errorf("initramfs: %w", err)
		return
	}
	o := c.boot
	o.arch, o.qemu = guestArches[k.Spec.Arch], c.qemu[k.Spec.Arch]
	o.logFile = filepath.Join(c.cacheDir, "logs", "console-"+k.Spec.ID()+".log")
	logf("%s: booting %s", k.Spec.ID(), k.Release)
	res := boot(ctx, k.Vmlinuz, initrd, o)
	r.run = parseRun(res.Console, c.hooks)
	// A guest that died (not hung) before /init ran the agent ran no test,
	// so nothing is hidden by booting again. Kernels do fault
	// intermittently this early under TCG; the notes keep it visible. Up to
	// two more boots: CI must not go red on an emulator flake, and must
	// not loop on a kernel that never boots.
	for attempt := 1; attempt <= 2 && !r.run.Started && !res.TimedOut && ctx.Err() == nil; attempt++ {
		why := "no agent output"
		if i := bytes.Index(res.Console, []byte("Kernel panic")); i >= 0 {
			line, _, _ := bytes.Cut(res.Console[i:], []byte("\n"))
			why = strings.TrimSpace(string(line))
		} else if res.Err != nil {
			why = res.Err.Error()
		}
		failed := fmt.Sprintf("%s.boot%d", o.logFile, attempt)
		_ = os.WriteFile(failed, res.Console, 0o644)
		r.notes = append(r.notes, fmt.Sprintf("boot %d failed before the tests (%s, console in %s); booted again", attempt, why, failed))
		logf("%s: boot %d failed before the tests (%s); booting again", k.Spec.ID(), attempt, why)
		res = boot(ctx, k.Vmlinuz, initrd, o)
		r.run = parseRun(res.Console, c.hooks)
	}
	r.boot = &res
	r.notes = append(r.notes, "console: "+o.logFile)
	if r.run.Done {
		r.notes = append(r.notes, fmt.Sprintf("guest uptime: %.1fs at agent start, %.1fs when done; qemu ran %.1fs",
			r.run.StartUptime, r.run.DoneUptime, res.Duration.Seconds()))
	}
	if i := bytes.Index(res.Console, []byte("Kernel panic")); i >= 0 {
		line, _, _ := bytes.Cut(res.Console[i:], []byte("\n"))
		r.run.problem("the guest kernel panicked: %s", strings.TrimSpace(string(line)))
	}
	if r.run.Kernel != "" && r.run.Kernel != k.Release {
		r.run.problem("the guest runs kernel %s, expected %s", r.run.Kernel, k.Release)
	}
	logf("%s: VM finished in %.1fs", k.Spec.ID(), res.Duration.Seconds())
}
