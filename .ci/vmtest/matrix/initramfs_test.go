package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// busybox cpio (the same unpacker family as the kernel's newc reader) must
// read back every kind of entry the runner writes.
func TestCpioReadsBackWithBusybox(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox not installed")
	}
	a := newArchive()
	a.addFile("init", 0o755, []byte("#!/bin/sh\necho hi\n"))
	a.addFile("etc/deep/odd-len", 0o644, []byte("12345")) // exercises data padding
	a.addFile("etc/empty", 0o600, nil)
	a.addSymlink("bin/sh", "/bin/busybox")
	a.addDir("tmp", 0o1777)
	root := os.Geteuid() == 0
	if root {
		a.addCharDev("dev/console", 0o600, 5, 1)
	}
	var buf bytes.Buffer
	if err := a.writeCpio(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d not a multiple of 4", buf.Len())
	}

	list := exec.Command("/bin/busybox", "cpio", "-t")
	list.Stdin = bytes.NewReader(buf.Bytes())
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	for _, want := range []string{"init", "etc", "etc/deep", "etc/deep/odd-len", "etc/empty", "bin/sh", "tmp"} {
		if !strings.Contains("\n"+string(out), "\n"+want+"\n") {
			t.Errorf("cpio -t misses %s:\n%s", want, out)
		}
	}

	dir := t.TempDir()
	ext := exec.Command("/bin/busybox", "cpio", "-i", "-d")
	ext.Dir = dir
	ext.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := ext.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "init")); string(b) != "#!/bin/sh\necho hi\n" {
		t.Errorf("init = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/deep/odd-len")); string(b) != "12345" {
		t.Errorf("odd-len = %q", b)
	}
	if st, err := os.Stat(filepath.Join(dir, "init")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("init mode: %v %v", st, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || l != "/bin/busybox" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || !st.IsDir() || st.Mode()&os.ModeSticky == 0 {
		t.Errorf("tmp: %v %v, want a sticky directory", st, err)
	}
	if root {
		st, err := os.Stat(filepath.Join(dir, "dev/console"))
		if err != nil || st.Mode()&os.ModeCharDevice == 0 {
			t.Errorf("dev/console: %v %v, want a character device", st, err)
		}
	}
}

func TestParseLddOfRealBinary(t *testing.T) {
	bin, err := exec.LookPath("ss")
	if err != nil {
		t.Skip("ss not installed")
	}
	libs, err := sharedLibs(t.Context(), bin)
	if err != nil {
		t.Fatal(err)
	}
	hasLibc, hasLoader := false, false
	for _, l := range libs {
		if _, err := os.Stat(l); err != nil {
			t.Errorf("ldd named %s, which does not exist: %v", l, err)
		}
		hasLibc = hasLibc || strings.Contains(filepath.Base(l), "libc.so")
		hasLoader = hasLoader || strings.Contains(filepath.Base(l), "ld-linux")
	}
	if !hasLibc || !hasLoader {
		t.Errorf("libs %v: want libc and the loader", libs)
	}
	if _, err := parseLdd([]byte("\tlibfoo.so.1 => not found\n")); err == nil {
		t.Error("a missing library must be an error")
	}
}

func TestRequireStatic(t *testing.T) {
	if ss, err := exec.LookPath("ss"); err == nil {
		if err := requireStatic(ss, guestArches[hostArch].Machine); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
			t.Errorf("requireStatic(%s) = %v, want dynamically linked", ss, err)
		}
	}
	if err := requireStatic("/bin/busybox", guestArches[hostArch].Machine); err != nil && !os.IsNotExist(err) {
		t.Errorf("busybox-static: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := requireStatic(bad, guestArches[hostArch].Machine); err == nil {
		t.Error("a shell script is not a static binary")
	}
}
