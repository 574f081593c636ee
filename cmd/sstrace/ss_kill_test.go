package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestSSKillParity: -K closes the matching TCP, UDP and RAW sockets and
// prints them as ss -K does. Two equal populations in a fresh namespace (two connections to
// each of two listeners): ours closes one listener's clients, the real ss
// the other's; the outputs are the same once the port numbers are blanked,
// and afterwards the kernel has none of those connections left. Without
// CAP_NET_ADMIN, -K fails with a line that says so.
func TestSSKillParity(t *testing.T) {
	ns := testutil.NewNS(t)
	bin := sstraceBinary(t)
	var keep []net.Conn
	var ports [2]int
	err := ns.Do(func() error {
		for i := range ports {
			ln, err := testutil.ListenTCP4()
			if err != nil {
				return err
			}
			t.Cleanup(func() { ln.Close() })
			ports[i] = ln.Addr().(*net.TCPAddr).Port
			for j := 0; j < 2; j++ {
				c, err := net.Dial("tcp4", ln.Addr().String())
				if err != nil {
					return err
				}
				s, err := ln.Accept()
				if err != nil {
					return err
				}
				keep = append(keep, c, s)
			}
		}
		return nil
	})
	if err != nil {
		testutil.Unavailable(t, "sockets in a namespace: %v", err)
	}
	t.Cleanup(func() {
		for _, c := range keep {
			c.Close()
		}
	})
	portRe := regexp.MustCompile(`:\d+`)
	norm := func(out string) []string {
		ls := strings.Split(strings.TrimSpace(out), "\n")
		for i, l := range ls {
			ls[i] = strings.Join(strings.Fields(portRe.ReplaceAllString(l, ":P")), " ")
		}
		sort.Strings(ls)
		return ls
	}
	ours, _, err := runOurs(context.Background(), []string{"-N", ns.Name, "-K", "-tn", fmt.Sprintf("dport = :%d", ports[0])})
	if err != nil {
		t.Fatalf("sstrace ss -K: %v", err)
	}
	theirs := runReal(t, []string{"-N", ns.Name, "-K", "-tn", fmt.Sprintf("dport = :%d", ports[1])})
	if o, r := norm(ours), norm(theirs); len(o) != 3 || strings.Join(o, "\n") != strings.Join(r, "\n") {
		t.Errorf("-K output, ports blanked:\nsstrace:\n%s\nss:\n%s", strings.Join(o, "\n"), strings.Join(r, "\n"))
	}
	left := runReal(t, []string{"-N", ns.Name, "-Htn", fmt.Sprintf("dport = :%d or dport = :%d", ports[0], ports[1])})
	if strings.TrimSpace(left) != "" {
		t.Errorf("connections left after -K:\n%s", left)
	}

	// UDP: two connected sockets towards each of two ports.
	var udpPorts [2]int
	err = ns.Do(func() error {
		for i := range udpPorts {
			srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				return err
			}
			t.Cleanup(func() { srv.Close() })
			udpPorts[i] = srv.LocalAddr().(*net.UDPAddr).Port
			for j := 0; j < 2; j++ {
				c, err := net.Dial("udp4", srv.LocalAddr().String())
				if err != nil {
					return err
				}
				t.Cleanup(func() { c.Close() })
			}
		}
		return nil
	})
	if err != nil {
		testutil.Unavailable(t, "UDP sockets in a namespace: %v", err)
	}
	ours, _, err = runOurs(context.Background(), []string{"-N", ns.Name, "-K", "-un", fmt.Sprintf("dport = :%d", udpPorts[0])})
	if err != nil {
		t.Fatalf("sstrace ss -K -u: %v", err)
	}
	theirs = runReal(t, []string{"-N", ns.Name, "-K", "-un", fmt.Sprintf("dport = :%d", udpPorts[1])})
	if o, r := norm(ours), norm(theirs); len(o) != 3 || strings.Join(o, "\n") != strings.Join(r, "\n") {
		t.Errorf("-K -u output, ports blanked:\nsstrace:\n%s\nss:\n%s", strings.Join(o, "\n"), strings.Join(r, "\n"))
	}
	if left := runReal(t, []string{"-N", ns.Name, "-Hun"}); strings.TrimSpace(left) != "" {
		t.Errorf("UDP sockets left after -K:\n%s", left)
	}
	// RAW: raw_abort leaves the socket listed and hands its owner
	// ECONNABORTED, and only kernels with raw_diag can do it (this host's
	// has none; there ss -K lists the rows it read from /proc/net/raw as
	// if it had closed them). sstrace prints a row if and only if the
	// kernel closed it: the owner's SO_ERROR says which.
	var rawFD int
	err = ns.Do(func() error {
		var err error
		rawFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 253)
		return err
	})
	if err != nil {
		testutil.Unavailable(t, "a RAW socket in a namespace: %v", err)
	}
	t.Cleanup(func() { unix.Close(rawFD) })
	ours, _, err = runOurs(context.Background(), []string{"-N", ns.Name, "-K", "-wan"})
	if err != nil {
		t.Fatalf("sstrace ss -K -w: %v", err)
	}
	soErr, err := unix.GetsockoptInt(rawFD, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		t.Fatal(err)
	}
	printed := strings.Contains(ours, ":253 ")
	if printed != (soErr == int(unix.ECONNABORTED)) {
		t.Errorf("-K -w printed the RAW socket: %v; its owner's SO_ERROR after: %d\n%s", printed, soErr, ours)
	}

	// No CAP_NET_ADMIN: a listener of this process in the host namespace,
	// -K by an unprivileged user.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := exec.LookPath("setpriv"); err != nil {
		testutil.Unavailable(t, "setpriv (util-linux) to drop privileges: %v", err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "ss", "-K", "-tln",
		fmt.Sprintf("sport = :%d", ln.Addr().(*net.TCPAddr).Port))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "CAP_NET_ADMIN") {
		t.Errorf("-K without CAP_NET_ADMIN: err %v, stderr %q", err, stderr.String())
	}
}

// TestSSVersion: -V, and ss's undocumented -v, print one line naming
// sstrace that ends with what the real ss -V prints: the ss whose language
// sstrace speaks is the one installed (the parity suite's reference).
func TestSSVersion(t *testing.T) {
	if _, err := exec.LookPath("ss"); err != nil {
		testutil.Unavailable(t, "iproute2 ss not installed: %v", err)
	}
	real := strings.TrimSpace(runReal(t, []string{"-V"}))
	for _, flag := range []string{"-V", "-v"} {
		out, _, err := runOurs(context.Background(), []string{flag})
		if err != nil {
			t.Fatalf("sstrace ss %s: %v", flag, err)
		}
		line := strings.TrimSpace(out)
		if !strings.HasPrefix(line, "ss utility, sstrace ") || !strings.HasSuffix(line, ", speaking the language of "+real) ||
			strings.Count(out, "\n") != 1 {
			t.Errorf("sstrace ss %s: %q; ss -V: %q", flag, out, real)
		}
	}
}
