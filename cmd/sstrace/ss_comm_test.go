package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"regexp"
	"testing"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestSSProcessNameParity: `ss -p` prints a process name raw, control
// bytes and all, and `sstrace ss -p` must print the same bytes (the human
// forms of trace, history and closewait escape names; ss's table does not,
// and parity wins there). The name, a newline and a terminal escape, is
// given by a shell holding the only descriptor of a listener.
func TestSSProcessNameParity(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("ss"); err != nil {
		testutil.Unavailable(t, "iproute2 ss not installed: %v", err)
	}
	ns := testutil.NewNS(t)
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = noKeepAlive.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	const comm = "x\n\x1b[31mZ"
	sh := exec.Command("sh", "-c", `printf 'x\n\033[31mZ' > /proc/$$/comm && echo ready && read x`)
	sh.ExtraFiles = []*os.File{f}
	stdin, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close() // the shell holds the listener alone
	t.Cleanup(func() {
		stdin.Close()
		sh.Wait()
	})
	if l, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("shell: %q, %v", l, err)
	}

	args := []string{"-N", ns.Name, "-tlpH"}
	want, err := exec.Command("ss", args...).Output()
	if err != nil {
		t.Fatalf("ss %q: %v", args, err)
	}
	got, err := exec.Command(sstraceBinary(t), append([]string{"ss"}, args...)...).Output()
	if err != nil {
		t.Fatalf("sstrace ss %q: %v", args, err)
	}
	if !bytes.Contains(want, []byte(`users:(("`+comm+`",pid=`)) {
		t.Fatalf("ss does not show the shell's name raw: %q", want)
	}
	spaces := regexp.MustCompile(` +`)
	if g, w := spaces.ReplaceAll(got, []byte(" ")), spaces.ReplaceAll(want, []byte(" ")); !bytes.Equal(g, w) {
		t.Errorf("sstrace ss %q:\n%q\nss:\n%q", args, g, w)
	}
}
