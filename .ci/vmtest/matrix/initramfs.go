package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// archive is an initramfs being assembled: guest path -> entry. Parents
// are added implicitly; the cpio is written sorted, so parents come first
// and the same inputs give the same bytes.
type archive struct {
	entries map[string]*cpioEntry
}

type cpioEntry struct {
	mode         uint32 // type and permission bits, as in stat(2)
	data         []byte // file contents, or the symlink target
	rdevMajor    uint32
	rdevMinor    uint32
	fromHostPath string // for error messages only
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeChar    = 0o020000
)

func newArchive() *archive { return &archive{entries: map[string]*cpioEntry{}} }

// clean turns a guest path into the archive's form: relative, no "./".
func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

func (a *archive) addParents(p string) {
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := a.entries[d]; !ok {
			a.entries[d] = &cpioEntry{mode: modeDir | 0o755}
		}
	}
}

func (a *archive) addDir(p string, perm uint32) {
	p = clean(p)
	a.addParents(p)
	a.entries[p] = &cpioEntry{mode: modeDir | perm}
}

func (a *archive) addFile(p string, perm uint32, data []byte) {
	p = clean(p)
	a.addParents(p)
	a.entries[p] = &cpioEntry{mode: modeFile | perm, data: data}
}

// addHostFile copies a host file (following symlinks) into the archive.
func (a *archive) addHostFile(p, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	a.addFile(p, uint32(st.Mode().Perm()), data)
	a.entries[clean(p)].fromHostPath = src
	return nil
}

func (a *archive) addSymlink(p, target string) {
	p = clean(p)
	a.addParents(p)
	a.entries[p] = &cpioEntry{mode: modeSymlink | 0o777, data: []byte(target)}
}

func (a *archive) addCharDev(p string, perm, major, minor uint32) {
	p = clean(p)
	a.addParents(p)
	a.entries[p] = &cpioEntry{mode: modeChar | perm, rdevMajor: major, rdevMinor: minor}
}

func (a *archive) has(p string) bool { _, ok := a.entries[clean(p)]; return ok }

// writeCpio writes the archive in the "newc" format the kernel unpacks
// (Documentation/driver-api/early-userspace/buffer-format.rst): per entry a
// 110-byte ASCII header, the NUL-terminated name and the data, each padded
// to 4 bytes, then the TRAILER!!! entry.
func (a *archive) writeCpio(w io.Writer) error {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	bw := bufio.NewWriter(w)
	ino := uint32(1)
	for _, n := range names {
		if err := writeCpioEntry(bw, n, a.entries[n], ino); err != nil {
			return err
		}
		ino++
	}
	if err := writeCpioEntry(bw, "TRAILER!!!", &cpioEntry{}, 0); err != nil {
		return err
	}
	return bw.Flush()
}

func writeCpioEntry(w io.Writer, name string, e *cpioEntry, ino uint32) error {
	nlink := uint32(1)
	if e.mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.rdevMajor, e.rdevMinor, len(name)+1, 0)
	if _, err := io.WriteString(w, hdr+name+"\x00"); err != nil {
		return err
	}
	if err := pad(w, len(hdr)+len(name)+1); err != nil {
		return err
	}
	if _, err := w.Write(e.data); err != nil {
		return err
	}
	return pad(w, len(e.data))
}

func pad(w io.Writer, n int) error {
	if r := n % 4; r != 0 {
		_, err := w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

// writeGzip writes the gzip-compressed cpio to file.
func (a *archive) writeGzip(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	// BestSpeed: the initramfs is rebuilt every run, and the size makes no
	// difference to the guest's unpacking time.
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		f.Close()
		return err
	}
	if err := a.writeCpio(zw); err != nil {
		f.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// guestBins are the static binaries put into every initramfs.
type guestBins struct {
	agent, sstrace, tracerTest string
}

// baseArchive holds what every initramfs of one architecture shares:
// busybox and its applets, the test binaries, /init, host tools the tests
// may run (ss, ip) with their shared libraries, and the few /etc files
// they read. busybox is the host's /bin/busybox for the host's
// architecture, and foreignBusybox's otherwise.
func baseArchive(ctx context.Context, bins guestBins, initScript []byte, hostTools []string, arch guestArch, busybox string) (*archive, []string, error) {
	a := newArchive()
	var notes []string
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "root", "etc", "var/tmp", "mnt"} {
		a.addDir(d, 0o755)
	}
	a.addDir("tmp", 0o1777)
	// The kernel opens /dev/console for init's stdio before init can mount
	// devtmpfs, so the node must be in the archive itself.
	a.addCharDev("dev/console", 0o600, 5, 1)
	a.addCharDev("dev/null", 0o666, 1, 3)
	a.addFile("init", 0o755, initScript)

	if err := a.addHostFile("bin/busybox", busybox); err != nil {
		return nil, nil, fmt.Errorf("busybox (apt-get install busybox-static): %w", err)
	}
	if err := requireStatic(busybox, arch.Machine); err != nil {
		return nil, nil, err
	}
	var applets []string
	if arch.Name == hostArch {
		out, err := exec.CommandContext(ctx, busybox, "--list-full").Output()
		if err != nil {
			return nil, nil, fmt.Errorf("busybox --list-full: %w", err)
		}
		applets = strings.Fields(string(out))
		if len(applets) < 50 {
			return nil, nil, fmt.Errorf("busybox --list-full lists only %d applets", len(applets))
		}
	} else {
		// A foreign busybox cannot list its applets here: /init makes
		// their links (busybox --install -s) in the directories that
		// this creates. /bin/sh runs /init itself.
		for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin"} {
			a.addDir(d, 0o755)
		}
		a.addSymlink("bin/sh", "/bin/busybox")
		hostTools = nil
		notes = append(notes, "host tools (ss, ip) are not copied into "+arch.Name+" guests: they are "+hostArch+" binaries")
	}

	for guest, host := range map[string]string{"bin/agent": bins.agent, "bin/sstrace": bins.sstrace, "bin/tracer.test": bins.tracerTest} {
		if err := requireStatic(host, arch.Machine); err != nil {
			return nil, nil, err
		}
		if err := a.addHostFile(guest, host); err != nil {
			return nil, nil, err
		}
	}

	for _, tool := range hostTools {
		p, err := exec.LookPath(tool)
		if err != nil {
			notes = append(notes, fmt.Sprintf("host tool %s not found: not in the guest", tool))
			continue
		}
		p, _ = filepath.Abs(p)
		libs, err := sharedLibs(ctx, p)
		if err != nil {
			return nil, nil, err
		}
		// Under the host's path, /usr/bin, which PATH puts before busybox.
		if err := a.addHostFile(p, p); err != nil {
			return nil, nil, err
		}
		for _, l := range libs {
			if !a.has(l) {
				if err := a.addHostFile(l, l); err != nil {
					return nil, nil, fmt.Errorf("%s needs %s: %w", tool, l, err)
				}
			}
		}
	}
	for _, applet := range applets {
		if !a.has(applet) {
			a.addSymlink(applet, "/bin/busybox")
		}
	}

	a.addFile("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	a.addFile("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	a.addFile("etc/hosts", 0o644, []byte("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"))
	a.addFile("etc/nsswitch.conf", 0o644, []byte("passwd: files\ngroup: files\nhosts: files\nservices: files\nprotocols: files\n"))
	for _, f := range []string{"/etc/services", "/etc/protocols"} {
		if fileExists(f) {
			if err := a.addHostFile(f, f); err != nil {
				return nil, nil, err
			}
		}
	}
	return a, notes, nil
}

// withModules returns a copy of base with the kernel's modules (unpacked)
// under /lib/modules/vmtest and their load order in /etc/vmtest-modules.
func withModules(ctx context.Context, base *archive, k *kernel) (*archive, error) {
	a := newArchive()
	for n, e := range base.entries {
		a.entries[n] = e
	}
	var list []string
	for i, m := range k.Modules {
		data, err := readModule(ctx, m)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("lib/modules/vmtest/%02d-%s.ko", i, moduleName(m))
		a.addFile(name, 0o644, data)
		list = append(list, "/"+name)
	}
	a.addFile("etc/vmtest-modules", 0o644, []byte(strings.Join(list, "\n")+"\n"))
	a.addFile("etc/vmtest-kernel", 0o644, []byte(k.Release+"\n"))
	return a, nil
}

// readModule returns a module uncompressed: busybox insmod and old kernels
// cannot be relied on to take .ko.xz or .ko.zst.
func readModule(ctx context.Context, p string) ([]byte, error) {
	switch {
	case strings.HasSuffix(p, ".ko"):
		return os.ReadFile(p)
	case strings.HasSuffix(p, ".ko.gz"):
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(p, ".ko.xz"):
		return decompressWith(ctx, p, "/bin/busybox", "xzcat")
	case strings.HasSuffix(p, ".ko.zst"):
		return decompressWith(ctx, p, "zstd", "-dc")
	}
	return nil, fmt.Errorf("module %s: unknown compression", p)
}

func decompressWith(ctx context.Context, p, tool string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, append(args, p)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("decompress %s with %s: %v: %s", p, tool, err, stderr.String())
	}
	return out, nil
}

// ldd lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
// "/lib64/ld-linux-x86-64.so.2 (0x...)".
var lddPathRE = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)`)

// sharedLibs lists the libraries (and the loader) a host binary needs,
// as the host's own loader resolves them.
func sharedLibs(ctx context.Context, bin string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", bin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	return parseLdd(out)
}

func parseLdd(out []byte) ([]string, error) {
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "linux-vdso") {
			continue
		}
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd: %s", line)
		}
		m := lddPathRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("ldd: cannot read line %q", line)
		}
		libs = append(libs, m[1])
	}
	return libs, nil
}
