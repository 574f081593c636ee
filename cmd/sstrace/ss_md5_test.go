package main

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestSSMD5Parity: -i ends a TCP-MD5 socket's details with its keys. ss
// 6.1 writes each key with printf, outside its buffered output, so the
// keys land, in row order, before its header, and its rows keep
// " md5keys:ADDR/PREFIX=" alone; sstrace writes each key in its row. The
// keys sstrace prints, in row order, must be exactly what ss printed up
// there (the escaping of spaces, commas, backslashes and unprintable bytes
// included), and each row's prefix what ss's rows show.
func TestSSMD5Parity(t *testing.T) {
	ns := requireSS(t)
	key := []byte("sek ret,\\x\x01")
	var closers []interface{ Close() error }
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
	var port int
	err := ns.Do(func() error {
		lc := net.ListenConfig{Control: md5Control(key)}
		lc.SetMultipathTCP(false)
		ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		closers = append(closers, ln)
		port = ln.Addr().(*net.TCPAddr).Port
		d := net.Dialer{Control: md5Control(key)}
		c, err := d.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		s, err := ln.Accept()
		if err != nil {
			return err
		}
		closers = append(closers, c, s)
		return nil
	})
	if err != nil {
		if errors.Is(err, unix.ENOPROTOOPT) {
			t.Skip("the kernel has no TCP-MD5 (CONFIG_TCP_MD5SIG)")
		}
		t.Fatalf("TCP-MD5 sockets: %v", err)
	}
	filter := "sport = :" + strconv.Itoa(port) + " or dport = :" + strconv.Itoa(port)
	args := []string{"-N", ns.Name, "-tnai", filter}
	real := runReal(t, args)
	leaked, _, ok := strings.Cut(real, "State")
	if !ok || leaked == "" {
		t.Fatalf("ss -tnai printed no keys ahead of its header (is it still 6.1?):\n%s", real)
	}
	ours, _, err := runOurs(context.Background(), args)
	if err != nil {
		t.Fatal(err)
	}
	var keys, prefixes []string
	for _, l := range strings.Split(ours, "\n") {
		if _, k, ok := strings.Cut(l, " md5keys:127.0.0.1/32="); ok {
			keys = append(keys, strings.TrimRight(k, " ")) // ss pads a row's last field
			prefixes = append(prefixes, "md5keys:127.0.0.1/32=")
		}
	}
	if len(keys) != 3 || strings.Join(keys, "") != leaked {
		t.Errorf("keys in sstrace's rows %q; ss printed %q", keys, leaked)
	}
	if n := len(regexp.MustCompile(` md5keys:127\.0\.0\.1/32= *\n`).FindAllString(real, -1)); n != len(prefixes) {
		t.Errorf("ss has %d rows ending in md5keys:127.0.0.1/32=, sstrace %d\nss:\n%s\nsstrace:\n%s", n, len(prefixes), real, ours)
	}
}

// md5Control sets a TCP-MD5 key for the peer 127.0.0.1/32 on a socket
// before it listens or connects.
func md5Control(key []byte) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			sig := unix.TCPMD5Sig{Keylen: uint16(len(key))}
			sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sig.Addr))
			sa.Family = unix.AF_INET
			sa.Addr = [4]byte{127, 0, 0, 1}
			copy(sig.Key[:], key)
			serr = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
		})
		if err != nil {
			return err
		}
		return serr
	}
}
