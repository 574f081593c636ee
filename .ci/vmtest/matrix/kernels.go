package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// kernelSpec is one line of kernels.conf.
type kernelSpec struct {
	Series string // "6.1": the package booted must be of this series
	Suite  string // "bookworm": where linux-image-cloud-ARCH is looked up
	Arch   string // "amd64" (the default) or "arm64": the guest's architecture
}

// ID names the kernel in -kernels, the cache and the log files: the series
// alone for amd64 (as before there were other architectures), "6.1-arm64"
// otherwise.
func (s kernelSpec) ID() string {
	if s.Arch == "amd64" {
		return s.Series
	}
	return s.Series + "-" + s.Arch
}

var (
	seriesRE = regexp.MustCompile(`^[0-9]+\.[0-9]+$`)
	suiteRE  = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
)

// parseKernelsConf reads "SERIES SUITE [ARCH]" lines; '#' starts a
// comment.
func parseKernelsConf(r io.Reader) ([]kernelSpec, error) {
	var specs []kernelSpec
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 && len(f) != 3 {
			return nil, fmt.Errorf("line %d: want \"SERIES SUITE [ARCH]\", got %q", n, strings.TrimSpace(line))
		}
		spec := kernelSpec{Series: f[0], Suite: f[1], Arch: "amd64"}
		if len(f) == 3 {
			if _, err := lookupArch(f[2]); err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			spec.Arch = f[2]
		}
		if !seriesRE.MatchString(f[0]) {
			return nil, fmt.Errorf("line %d: series %q is not MAJOR.MINOR", n, f[0])
		}
		if !suiteRE.MatchString(f[1]) {
			return nil, fmt.Errorf("line %d: suite %q is not a Debian suite name", n, f[1])
		}
		if seen[spec.ID()] {
			return nil, fmt.Errorf("line %d: series %s listed twice for %s", n, f[0], spec.Arch)
		}
		seen[spec.ID()] = true
		specs = append(specs, spec)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return nil, errors.New("no kernels listed")
	}
	return specs, nil
}

// kernel is a kernel package fetched and unpacked, ready to boot.
type kernel struct {
	Spec    kernelSpec
	Package string // linux-image-...-cloud-ARCH-unsigned
	Version string // Debian version of that package
	Release string // uname -r of the kernel inside
	Vmlinuz string
	Config  map[string]string // CONFIG_X -> "y", "m", ...
	// Modules are the .ko files to load at boot, dependencies first.
	Modules []string
	Notes   []string // what the runner decided, shown in the report
}

// Label names the kernel in the matrix: "6.1 (bookworm)" for amd64,
// "6.1 (bookworm, arm64)" for the others.
func (k *kernel) Label() string {
	if k.Spec.Arch == "amd64" {
		return k.Spec.Series + " (" + k.Spec.Suite + ")"
	}
	return k.Spec.Series + " (" + k.Spec.Suite + ", " + k.Spec.Arch + ")"
}

// fetchOptions say where to cache and which mirrors to use.
type fetchOptions struct {
	cacheDir       string        // .cache/vmtest
	mirror         string        // Debian archive
	securityMirror string        // Debian security archive
	maxAge         time.Duration // reuse a resolution younger than this
	log            func(format string, args ...any)
}

// resolved is what a suite's resolution is cached as.
type resolved struct {
	Package       string    `json:"package"`
	Version       string    `json:"version"`
	Deb           string    `json:"deb"`
	NewestPackage string    `json:"newest_package"`
	NewestVersion string    `json:"newest_version"`
	When          time.Time `json:"when"`
}

// prepareKernel resolves, downloads (or reuses) and unpacks one kernel.
func prepareKernel(ctx context.Context, spec kernelSpec, o fetchOptions) (*kernel, error) {
	dir := filepath.Join(o.cacheDir, "kernels", spec.ID()+"-"+spec.Suite)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	k := &kernel{Spec: spec}
	res, err := resolveAndFetch(ctx, spec, dir, o, k)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", spec.ID(), err)
	}
	k.Package, k.Version = res.Package, res.Version
	root, err := unpack(ctx, res.Deb, dir)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", spec.ID(), err)
	}
	if err := inspect(k, root); err != nil {
		return nil, fmt.Errorf("kernel %s (%s %s): %w", spec.ID(), k.Package, k.Version, err)
	}
	return k, nil
}

// resolveAndFetch returns the cached resolution when it is fresh, and
// otherwise asks apt (with a private configuration) and downloads.
func resolveAndFetch(ctx context.Context, spec kernelSpec, dir string, o fetchOptions, k *kernel) (*resolved, error) {
	stamp := filepath.Join(dir, "resolved.json")
	var cached *resolved
	if b, err := os.ReadFile(stamp); err == nil {
		var r resolved
		if json.Unmarshal(b, &r) == nil && fileExists(r.Deb) {
			cached = &r
		}
	}
	if cached != nil && time.Since(cached.When) < o.maxAge {
		k.Notes = append(k.Notes, fmt.Sprintf("cached %s (resolved %s ago)", filepath.Base(cached.Deb), time.Since(cached.When).Round(time.Minute)))
		noteNewest(k, cached)
		return cached, nil
	}
	res, err := fetchNewest(ctx, spec, dir, o)
	if err != nil {
		if cached != nil {
			// Offline or the mirror is down: an older kernel of the same
			// series still tests something; say so instead of failing.
			k.Notes = append(k.Notes, fmt.Sprintf("apt failed (%v); using cached %s", err, filepath.Base(cached.Deb)))
			noteNewest(k, cached)
			return cached, nil
		}
		return nil, err
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(stamp, b, 0o644); err != nil {
		return nil, err
	}
	// Only the current deb is kept; older ones would pile up.
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	for _, d := range debs {
		if d != res.Deb {
			os.Remove(d)
			os.RemoveAll(strings.TrimSuffix(d, ".deb") + ".root")
		}
	}
	k.Notes = append(k.Notes, "downloaded "+filepath.Base(res.Deb))
	noteNewest(k, res)
	return res, nil
}

func noteNewest(k *kernel, r *resolved) {
	if r.NewestPackage != "" && (r.NewestPackage != r.Package || r.NewestVersion != r.Version) {
		k.Notes = append(k.Notes, fmt.Sprintf("newest %s %s could not be downloaded; booting %s %s",
			r.NewestPackage, r.NewestVersion, r.Package, r.Version))
	}
}

// apt runs apt-get/apt-cache against a private configuration in dir: its
// own sources list, package lists, cache and (empty) dpkg status, so the
// system's apt setup is neither read for sources nor changed. arch is the
// only architecture its lists hold and its downloads are for.
type apt struct{ dir, arch string }

func (a apt) options() []string {
	return []string{
		"-o", "Dir::Etc::sourcelist=" + filepath.Join(a.dir, "sources.list"),
		"-o", "Dir::Etc::sourceparts=-",
		"-o", "Dir::State::Lists=" + filepath.Join(a.dir, "lists"),
		"-o", "Dir::State::status=" + filepath.Join(a.dir, "status"),
		"-o", "Dir::Cache=" + filepath.Join(a.dir, "cache"),
		"-o", "Dir::Etc::preferences=" + filepath.Join(a.dir, "preferences"),
		"-o", "Dir::Etc::preferencesparts=" + filepath.Join(a.dir, "preferences.d"),
		"-o", "APT::Architecture=" + a.arch,
		"-o", "APT::Architectures=" + a.arch,
		"-o", "Debug::NoLocking=1",
		// The private directories belong to root; apt's _apt sandbox user
		// could not write there.
		"-o", "APT::Sandbox::User=root",
		// Only Packages indices are needed: skip translations and AppStream.
		"-o", "Acquire::Languages=none",
		"-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false",
		"-q",
	}
}

func (a apt) setup(suite string, o fetchOptions) error {
	for _, d := range []string{"lists/partial", "cache/archives/partial", "preferences.d"} {
		if err := os.MkdirAll(filepath.Join(a.dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(a.dir, "sources.list"), []byte(sourcesList(suite, o)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(a.dir, "status"), nil, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(a.dir, "preferences"), nil, 0o644)
}

// sourcesList names a release suite with its -updates and -security
// companions, where kernel fixes land between point releases. A suite that
// is itself a companion (bookworm-backports) has none: apt-get update would
// fail on the missing Release files.
func sourcesList(suite string, o fetchOptions) string {
	const key = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
	if strings.Contains(suite, "-") {
		return fmt.Sprintf("deb %s %s %s main\n", key, o.mirror, suite)
	}
	return fmt.Sprintf("deb %s %s %s main\ndeb %s %s %s-updates main\ndeb %s %s %s-security main\n",
		key, o.mirror, suite, key, o.mirror, suite, key, o.securityMirror, suite)
}

func (a apt) run(ctx context.Context, workdir, tool string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, tool, append(a.options(), args...)...)
	cmd.Dir = workdir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", tool, strings.Join(args, " "), err, lastLines(stderr.String(), 3))
	}
	return out, nil
}

// fetchNewest updates the private package lists, orders the suite's cloud
// kernels of the series newest first (the one linux-image-cloud-ARCH names
// leads) and downloads the first that the mirror serves.
func fetchNewest(ctx context.Context, spec kernelSpec, dir string, o fetchOptions) (*resolved, error) {
	a := apt{dir: filepath.Join(dir, "apt"), arch: spec.Arch}
	if err := a.setup(spec.Suite, o); err != nil {
		return nil, err
	}
	o.log("kernel %s: apt-get update (%s)", spec.ID(), spec.Suite)
	if _, err := a.run(ctx, dir, "apt-get", "update"); err != nil {
		return nil, err
	}
	cands, err := candidates(ctx, a, dir, spec)
	if err != nil {
		return nil, err
	}
	newest := cands[0]
	var errs []string
	for i, c := range cands {
		if i == 5 {
			break // more 404s will not tell anything new
		}
		tmp, err := os.MkdirTemp(dir, "download-")
		if err != nil {
			return nil, err
		}
		o.log("kernel %s: apt-get download %s=%s", spec.ID(), c.pkg, c.version)
		_, err = a.run(ctx, tmp, "apt-get", "download", c.pkg+"="+c.version)
		debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
		if err == nil && len(debs) == 1 {
			dst := filepath.Join(dir, filepath.Base(debs[0]))
			if err := os.Rename(debs[0], dst); err != nil {
				os.RemoveAll(tmp)
				return nil, err
			}
			os.RemoveAll(tmp)
			return &resolved{Package: c.pkg, Version: c.version, Deb: dst,
				NewestPackage: newest.pkg, NewestVersion: newest.version, When: time.Now()}, nil
		}
		os.RemoveAll(tmp)
		if err == nil {
			err = fmt.Errorf("apt-get download left %d .deb files", len(debs))
		}
		errs = append(errs, err.Error())
	}
	return nil, fmt.Errorf("no %s cloud kernel could be downloaded: %s", spec.ID(), strings.Join(errs, "; "))
}

type candidate struct{ pkg, version string }

// candidates lists the series' unsigned cloud kernels newest first, led by
// the one the suite's linux-image-cloud-ARCH depends on.
func candidates(ctx context.Context, a apt, dir string, spec kernelSpec) ([]candidate, error) {
	meta := "linux-image-cloud-" + spec.Arch
	out, err := a.run(ctx, dir, "apt-cache", "depends", meta)
	if err != nil {
		return nil, err
	}
	lead, err := parseMetaDepends(out, spec.Arch)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", meta, spec.Suite, err)
	}
	pattern := "^linux-image-" + regexp.QuoteMeta(spec.Series) + `\.[0-9].*-cloud-` + spec.Arch + `-unsigned$`
	out, err = a.run(ctx, dir, "apt-cache", "search", "--names-only", pattern)
	if err != nil {
		return nil, err
	}
	names := []string{lead}
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, ok := strings.Cut(line, " - "); ok && name != lead {
			names = append(names, strings.TrimSpace(name))
		}
	}
	out, err = a.run(ctx, dir, "apt-cache", append([]string{"madison"}, names...)...)
	if err != nil {
		return nil, err
	}
	cands, err := parseMadison(out)
	if err != nil {
		return nil, err
	}
	return orderCandidates(cands, lead, spec.Series)
}

// parseMetaDepends picks the kernel package out of `apt-cache depends
// linux-image-cloud-ARCH` and names its unsigned variant.
func parseMetaDepends(out []byte, arch string) (string, error) {
	re := regexp.MustCompile(`^\s*\|?Depends:\s*(linux-image-\S+-cloud-` + regexp.QuoteMeta(arch) + `)(-unsigned)?\s*$`)
	for _, line := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			return m[1] + "-unsigned", nil
		}
	}
	return "", fmt.Errorf("no linux-image-*-cloud-%s dependency in %q", arch, strings.TrimSpace(string(out)))
}

// parseMadison reads `apt-cache madison` lines: "pkg | version | source".
func parseMadison(out []byte) ([]candidate, error) {
	var cs []candidate
	seen := map[candidate]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "|")
		if len(f) < 3 {
			continue
		}
		c := candidate{strings.TrimSpace(f[0]), strings.TrimSpace(f[1])}
		if c.pkg == "" || c.version == "" {
			return nil, fmt.Errorf("apt-cache madison: bad line %q", line)
		}
		if !seen[c] {
			seen[c] = true
			cs = append(cs, c)
		}
	}
	return cs, nil
}

// orderCandidates keeps the versions of the series, sorts them newest first
// and puts the metapackage's choice (its newest version) in front.
func orderCandidates(cs []candidate, lead, series string) ([]candidate, error) {
	var keep []candidate
	for _, c := range cs {
		if strings.HasPrefix(c.version, series+".") {
			keep = append(keep, c)
		}
	}
	sort.SliceStable(keep, func(i, j int) bool { return compareDebVersions(keep[i].version, keep[j].version) > 0 })
	for i, c := range keep {
		if c.pkg == lead {
			copy(keep[1:i+1], keep[:i])
			keep[0] = c
			return keep, nil
		}
	}
	return nil, fmt.Errorf("the cloud kernel metapackage names %s, which has no %s version in the lists", lead, series)
}

// unpack extracts the .deb once next to it (a stamp marks completion).
func unpack(ctx context.Context, deb, dir string) (string, error) {
	root := strings.TrimSuffix(deb, ".deb") + ".root"
	if fileExists(filepath.Join(root, ".unpacked")) {
		return root, nil
	}
	os.RemoveAll(root)
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %v: %s", filepath.Base(deb), err, out)
	}
	return root, os.WriteFile(filepath.Join(root, ".unpacked"), nil, 0o644)
}

// Kernel options the initramfs cannot boot without: no initramfs, no gzip,
// no serial console (guestArch.ConsoleOption, checked with these) or no
// devtmpfs and the VM reports nothing.
var requiredBuiltins = []string{"CONFIG_BLK_DEV_INITRD", "CONFIG_RD_GZIP",
	"CONFIG_DEVTMPFS", "CONFIG_TMPFS", "CONFIG_BPF_SYSCALL", "CONFIG_NET_NS", "CONFIG_CGROUPS"}

// Options that decide which hooks can work; reported, not required: a
// missing one must show up as "n/a" from sstrace status, which is the point.
var hookOptions = []string{"CONFIG_DEBUG_INFO_BTF", "CONFIG_BPF_EVENTS", "CONFIG_TRACEPOINTS",
	"CONFIG_KPROBES", "CONFIG_KPROBE_EVENTS", "CONFIG_FUNCTION_TRACER",
	"CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS", "CONFIG_BPF_JIT", "CONFIG_CGROUP_BPF"}

// Features that Debian may build as modules, with the module that carries
// them. Without udev nothing loads them on demand, so /init insmods them:
// sock_diag (ss and the table's seeding) needs the *_diag modules.
var moduleOptions = []struct{ option, module string }{
	{"CONFIG_IPV6", "ipv6"},
	{"CONFIG_INET_DIAG", "inet_diag"},
	{"CONFIG_INET_TCP_DIAG", "tcp_diag"},
	{"CONFIG_INET_UDP_DIAG", "udp_diag"},
	{"CONFIG_INET_RAW_DIAG", "raw_diag"},
	{"CONFIG_UNIX_DIAG", "unix_diag"},
	{"CONFIG_NETLINK_DIAG", "netlink_diag"},
	{"CONFIG_VETH", "veth"},
}

// inspect finds vmlinuz, the config and the modules to load.
func inspect(k *kernel, root string) error {
	vmlinuz, err := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if err != nil || len(vmlinuz) != 1 {
		return fmt.Errorf("want one boot/vmlinuz-* in the package, found %d", len(vmlinuz))
	}
	k.Vmlinuz = vmlinuz[0]
	k.Release = strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	if !strings.HasPrefix(k.Release, k.Spec.Series+".") {
		return fmt.Errorf("kernel release %s is not of series %s", k.Release, k.Spec.Series)
	}
	cfg, err := os.Open(filepath.Join(root, "boot", "config-"+k.Release))
	if err != nil {
		return err
	}
	defer cfg.Close()
	if k.Config, err = parseKconfig(cfg); err != nil {
		return fmt.Errorf("config-%s: %w", k.Release, err)
	}
	arch, err := lookupArch(k.Spec.Arch)
	if err != nil {
		return err
	}
	for _, opt := range append([]string{arch.ConsoleOption}, requiredBuiltins...) {
		if k.Config[opt] != "y" {
			return fmt.Errorf("%s=%q: the test initramfs needs it built in", opt, k.Config[opt])
		}
	}
	var report []string
	for _, opt := range hookOptions {
		report = append(report, strings.TrimPrefix(opt, "CONFIG_")+"="+orN(k.Config[opt]))
	}
	k.Notes = append(k.Notes, "config: "+strings.Join(report, " "))

	var wanted, builtin []string
	for _, mo := range moduleOptions {
		switch k.Config[mo.option] {
		case "y":
			builtin = append(builtin, mo.module)
		case "m":
			wanted = append(wanted, mo.module)
		default:
			k.Notes = append(k.Notes, fmt.Sprintf("%s not set: %s unavailable", mo.option, mo.module))
		}
	}
	if len(wanted) > 0 {
		modDir := ""
		for _, d := range []string{"lib/modules", "usr/lib/modules"} {
			if p := filepath.Join(root, d, k.Release); fileExists(p) {
				modDir = p
			}
		}
		if modDir == "" {
			return fmt.Errorf("modules %v are =m but the package has no lib/modules/%s", wanted, k.Release)
		}
		order, err := moduleLoadOrder(modDir, wanted)
		if err != nil {
			return err
		}
		k.Modules = order
	}
	k.Notes = append(k.Notes, fmt.Sprintf("built in: %s; loaded as modules: %s",
		strings.Join(builtin, " "), strings.Join(moduleNames(k.Modules), " ")))
	return nil
}

func orN(v string) string {
	if v == "" {
		return "n"
	}
	return v
}

// parseKconfig reads CONFIG_X=value lines ("# CONFIG_X is not set" is
// simply absent, as the kernel treats it).
func parseKconfig(r io.Reader) (map[string]string, error) {
	cfg := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "CONFIG_") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("bad line %q", line)
		}
		cfg[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(cfg) == 0 {
		return nil, errors.New("no CONFIG_ lines")
	}
	return cfg, nil
}

// moduleLoadOrder returns the files of the wanted modules and of their
// dependencies, each dependency before its user. A .deb carries no
// modules.dep (depmod writes it at install time), so the dependencies are
// read from each module's own .modinfo "depends=" entry.
func moduleLoadOrder(modDir string, wanted []string) ([]string, error) {
	byName := map[string]string{}
	err := filepath.WalkDir(modDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			byName[moduleName(p)] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []string
	done := map[string]bool{}
	var visit func(name string, stack []string) error
	visit = func(name string, stack []string) error {
		if done[name] {
			return nil
		}
		for _, s := range stack {
			if s == name {
				return fmt.Errorf("module dependency cycle: %s", strings.Join(append(stack, name), " -> "))
			}
		}
		p, ok := byName[name]
		if !ok {
			return fmt.Errorf("module %s not found under %s", name, modDir)
		}
		data, err := readModule(context.Background(), p)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, d := range deps {
			if err := visit(d, append(stack, name)); err != nil {
				return err
			}
		}
		done[name] = true
		order = append(order, p)
		return nil
	}
	for _, w := range wanted {
		if err := visit(strings.ReplaceAll(w, "-", "_"), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDepends reads "depends=a,b" from a module's .modinfo section
// (NUL-separated key=value strings).
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, strings.ReplaceAll(d, "-", "_"))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// moduleName is the module name of a .ko path: base name without the
// .ko[.xz|.gz|.zst] suffix, '-' read as '_' as the kernel does.
func moduleName(path string) string {
	b := filepath.Base(path)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

func moduleNames(paths []string) []string {
	var n []string
	for _, p := range paths {
		n = append(n, moduleName(p))
	}
	return n
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
