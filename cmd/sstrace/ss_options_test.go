package main

// Parity of the options that need more than the shared socket population:
// -T (a process with several threads), -D (raw replies compared byte for
// byte), -E (both binaries follow the same sockets as they are closed),
// kTLS under -i, and -r through a namespace's own hosts file and DNS server.
//
//	sudo go test ./cmd/sstrace -run 'SS(Threads|Diag|Events|KTLS|Resolve)' -v

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// threadsHolderEnv makes the test binary hold a listener with several
// threads (holdWithThreads) instead of running tests: -T lists every thread.
const threadsHolderEnv = "SSTRACE_TEST_THREADS_HOLDER"

// holdWithThreads listens on the port the environment names, starts three
// threads of its own, says "ready" and waits for stdin to close.
func holdWithThreads() int {
	l, err := noKeepAlive.Listen(context.Background(), "tcp4", "127.0.0.1:"+os.Getenv(threadsHolderEnv))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer l.Close()
	for range 3 {
		go func() {
			runtime.LockOSThread() // a thread of its own, parked
			select {}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

func TestSSThreadsParity(t *testing.T) {
	ns := requireSS(t)
	const port = 7777
	cmd := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0])
	cmd.Env = append(os.Environ(), threadsHolderEnv+"="+strconv.Itoa(port))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("thread holder: %q", line)
	}
	ctx := context.Background()
	for _, args := range [][]string{
		{"-tlnT", "sport", "=", ":" + strconv.Itoa(port)},
		{"-tlnpT", "sport", "=", ":" + strconv.Itoa(port)},
		{"-tlT", "--json", "sport", "=", ":" + strconv.Itoa(port)},
	} {
		full := append([]string{"-N", ns.Name}, args...)
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			got, _, err := runOurs(ctx, full)
			if err != nil {
				t.Fatal(err)
			}
			if args[1] == "--json" {
				// One owner per thread, each with its tid.
				if n := strings.Count(got, `"tid":`); n < 4 {
					t.Errorf("%d owners with a tid, want the holder's 4 threads or more: %s", n, got)
				}
				return
			}
			want := runReal(t, full)
			if n := strings.Count(want, "tid="); n < 4 {
				t.Fatalf("ss lists %d threads, want 4 or more: %s", n, want)
			}
			compare(t, want, got)
		})
	}
}

// TestSSDiagParity compares -D FILE: the raw replies must be the same
// messages, but for the header's sequence number and port id (each
// program's own) and the countdown of a timer.
func TestSSDiagParity(t *testing.T) {
	p := buildPopulation(t)
	dir := t.TempDir()
	for _, args := range [][]string{{"-ta"}, {"-t4"}, {"-ta", "state", "listening"}, {"-tam"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			wantF, gotF := filepath.Join(dir, "ss.bin"), filepath.Join(dir, "sstrace.bin")
			runReal(t, append([]string{"-N", p.ns.Name, "-D", wantF}, args...))
			stdout, _, err := runOurs(context.Background(), append([]string{"-N", p.ns.Name, "-D", gotF}, args...))
			if err != nil || stdout != "" {
				t.Fatalf("sstrace ss -D: %v, stdout %q", err, stdout)
			}
			want, got := readDiag(t, wantF), readDiag(t, gotF)
			if len(want) < 3 {
				t.Fatalf("ss dumped only %d messages", len(want))
			}
			if len(want) != len(got) {
				t.Fatalf("ss dumped %d messages, sstrace %d", len(want), len(got))
			}
			for i := range want {
				if !bytes.Equal(want[i], got[i]) {
					t.Errorf("message %d differs:\n ss:      %x\n sstrace: %x", i, want[i], got[i])
				}
			}
		})
	}
	// Without TCP, ss says so and dumps nothing.
	full := []string{"-N", p.ns.Name, "-u", "-D", filepath.Join(dir, "none")}
	if _, stderr, err := runOurs(context.Background(), full); err != nil || !strings.Contains(stderr, "ss: tcpdiag dump requested and no tcp in filter.") {
		t.Errorf("-u -D: %v, stderr %q", err, stderr)
	}
}

// readDiag splits a -D file into its netlink messages, with the sequence
// number, port id and timer countdown (idiag_expires) zeroed.
func readDiag(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	for len(b) >= 16 {
		n := int(binary.NativeEndian.Uint32(b))
		if n < 16 || n > len(b) {
			t.Fatalf("malformed message of %d bytes with %d left", n, len(b))
		}
		m := bytes.Clone(b[:n])
		clear(m[8:16])
		if binary.NativeEndian.Uint16(m[4:]) == unix.SOCK_DIAG_BY_FAMILY && len(m) >= 16+72 {
			clear(m[16+52 : 16+56])
		}
		msgs = append(msgs, m)
		b = b[min((n+3)&^3, len(b)):]
	}
	return msgs
}

// TestSSEventsParity runs ss -E and sstrace ss -E side by side in a fresh
// namespace, closes TCP and UDP sockets there, and compares what both
// printed.
func TestSSEventsParity(t *testing.T) {
	ns := requireSS(t)
	if _, err := exec.LookPath("stdbuf"); err != nil {
		testutil.Unavailable(t, "stdbuf (coreutils) not installed: %v", err)
	}
	bin := sstraceBinary(t)
	for _, args := range [][]string{{"-E"}, {"-Eni"}, {"-Ete"}, {"-E", "-6"}, {"-Eu"}, {"-En", "dport", "=", ":9901"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			full := append([]string{"-N", ns.Name}, args...)
			// ss writes through stdio: unbuffered, so that what it
			// printed before it is killed is in the pipe.
			ss := exec.Command("stdbuf", append([]string{"-o0", "ss"}, full...)...)
			ours := exec.Command(bin, append([]string{"ss"}, full...)...)
			var ssOut, ourOut, ourErr bytes.Buffer
			ss.Stdout, ours.Stdout, ours.Stderr = &ssOut, &ourOut, &ourErr
			for _, c := range []*exec.Cmd{ss, ours} {
				if err := c.Start(); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(500 * time.Millisecond) // both join the groups
			closeSockets(t, ns)
			time.Sleep(300 * time.Millisecond)
			for _, c := range []*exec.Cmd{ss, ours} {
				_ = c.Process.Kill()
				_ = c.Wait()
			}
			if strings.Count(ssOut.String(), "\n") < 2 {
				t.Fatalf("ss -E printed too little to compare: %q", ssOut.String())
			}
			if ourErr.Len() != 0 {
				t.Errorf("stderr: %s", ourErr.String())
			}
			compare(t, ssOut.String(), ourOut.String())
		})
	}
}

// dialAccept connects d to l and returns both ends.
func dialAccept(d net.Dialer, l net.Listener) (client, server net.Conn, err error) {
	client, err = d.Dial(l.Addr().Network(), l.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	server, err = l.Accept()
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, server, nil
}

// requireSS checks for root and the real ss, and makes a fresh namespace.
func requireSS(t *testing.T) *testutil.NS {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("ss"); err != nil {
		testutil.Unavailable(t, "iproute2 ss not installed: %v", err)
	}
	return testutil.NewNS(t)
}

// closeSockets opens and closes TCP (a listener, a connection with unread
// data) and UDP sockets over IPv4 and IPv6 in ns.
func closeSockets(t *testing.T, ns *testutil.NS) {
	t.Helper()
	err := ns.Do(func() error {
		for _, addr := range []string{"127.0.0.1:9901", "[::1]:9901"} {
			l, err := noKeepAlive.Listen(context.Background(), "tcp", addr)
			if err != nil {
				return err
			}
			c, a, err := dialAccept(noKeepAliveDialer, l)
			if err != nil {
				return err
			}
			if _, err := a.Write([]byte("unread")); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
			c.Close()
			a.Close()
			l.Close()
			u, err := net.ListenPacket("udp", addr)
			if err != nil {
				return err
			}
			u.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSSKTLSParity sets kTLS up on a connection (TCP_ULP "tls", then
// TLS_TX and TLS_RX crypto info: TLS 1.2 with AES-GCM-128 on one end, 1.3
// with AES-GCM-256 sending only on the other) and compares -i, where ss
// ends the TCP details with tcp-ulp-tls.
func TestSSKTLSParity(t *testing.T) {
	ns := requireSS(t)
	_ = exec.Command("modprobe", "tls").Run() // where tls is a module
	const port = 4433
	var keep []net.Conn
	t.Cleanup(func() {
		for _, c := range keep {
			c.Close()
		}
	})
	err := ns.Do(func() error {
		l, err := noKeepAlive.Listen(context.Background(), "tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		defer l.Close()
		c, a, err := dialAccept(noKeepAliveDialer, l)
		if err != nil {
			return err
		}
		keep = append(keep, c, a)
		// struct tls12_crypto_info_aes_gcm_{128,256}: version, cipher,
		// then iv (8), key (16 or 32), salt (4), rec_seq (8).
		info := func(version, cipher uint16, keyLen int) string {
			b := make([]byte, 4+8+keyLen+4+8)
			binary.NativeEndian.PutUint16(b, version)
			binary.NativeEndian.PutUint16(b[2:], cipher)
			return string(b)
		}
		ends := []struct {
			c    net.Conn
			dirs []int
			info string
		}{
			{c, []int{tlsTX, tlsRX}, info(0x0303, 51, 16)},
			{a, []int{tlsTX}, info(0x0304, 52, 32)},
		}
		for _, e := range ends {
			rc, err := e.c.(*net.TCPConn).SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			if err := rc.Control(func(fd uintptr) {
				if serr = unix.SetsockoptString(int(fd), unix.SOL_TCP, unix.TCP_ULP, "tls"); serr != nil {
					return
				}
				for _, d := range e.dirs {
					if serr = unix.SetsockoptString(int(fd), unix.SOL_TLS, d, e.info); serr != nil {
						return
					}
				}
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("kTLS setsockopt: %w", serr)
			}
		}
		return nil
	})
	if errors.Is(err, unix.ENOENT) && kernelWithoutModules() {
		// Not a missing setup step: the kernel has no "tls" ULP and
		// cannot load one, so no kTLS socket can exist here.
		t.Skip("the running kernel has no kTLS (TCP_ULP \"tls\": ENOENT, no module support)")
	}
	if err != nil {
		testutil.Unavailable(t, "kTLS socket pair: %v", err)
	}
	filter := fmt.Sprintf("sport = :%d or dport = :%d", port, port)
	for _, args := range [][]string{{"-tni", filter}, {"-tniO", filter}, {"-tnie", filter}} {
		full := append([]string{"-N", ns.Name}, args...)
		t.Run(strings.Join(args[:1], " "), func(t *testing.T) {
			want := runReal(t, full)
			if strings.Count(want, "tcp-ulp-tls") != 2 {
				t.Fatalf("ss shows no kTLS details: %s", want)
			}
			got, _, err := runOurs(context.Background(), full)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, want, got)
		})
	}
}

// kTLS's socket options (include/uapi/linux/tls.h), which x/sys does not
// name.
const (
	tlsTX = 1
	tlsRX = 2
)

// kernelWithoutModules reports whether the running kernel was built
// without loadable modules (no /proc/modules): what it lacks, it lacks.
func kernelWithoutModules() bool {
	_, err := os.Stat("/proc/modules")
	return errors.Is(err, fs.ErrNotExist)
}

// TestSSResolveParity compares -r where names come from the namespace's
// own files, which ss -N bind-mounts over /etc: /etc/netns/NAME/hosts names
// 127.0.0.1, and 127.0.0.2, which no hosts file lists, is answered by a
// DNS server inside the namespace that /etc/netns/NAME/resolv.conf names.
// The host's /etc/hosts is never touched.
func TestSSResolveParity(t *testing.T) {
	ns := requireSS(t)
	etc := filepath.Join("/etc/netns", ns.Name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	files := map[string]string{
		"hosts":       "127.0.0.1 files-name.example files-alias\n",
		"resolv.conf": "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var keep []io.Closer
	t.Cleanup(func() {
		for _, c := range keep {
			c.Close()
		}
	})
	err := ns.Do(func() error {
		dns, err := net.ListenPacket("udp4", "127.0.0.1:53")
		if err != nil {
			return err
		}
		keep = append(keep, dns)
		go servePTR(dns, map[string]string{"2.0.0.127.in-addr.arpa.": "dns-name.example."})
		l, err := noKeepAlive.Listen(context.Background(), "tcp4", "127.0.0.1:8080")
		if err != nil {
			return err
		}
		keep = append(keep, l)
		d := net.Dialer{KeepAlive: -1, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c, a, err := dialAccept(d, l)
		if err != nil {
			return err
		}
		keep = append(keep, c, a)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-tnr"}, {"-tar"}, {"-tar", "-4", "dst", "127.0.0.2"}} {
		full := append([]string{"-N", ns.Name}, args...)
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			want := runReal(t, full)
			if !strings.Contains(want, "files-name.example") || !strings.Contains(want, "dns-name.example") {
				t.Fatalf("ss did not resolve through both sources: %s", want)
			}
			got, _, err := runOurs(context.Background(), full)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, want, got)
		})
	}
}

// servePTR answers DNS queries on c until it is closed: a PTR question for
// a name in ptr with that name, anything else with NXDOMAIN.
func servePTR(c net.PacketConn, ptr map[string]string) {
	buf := make([]byte, 512)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		q := buf[:n]
		if len(q) < 12 {
			continue
		}
		// The question: labels up to the root, then type and class.
		var name strings.Builder
		i := 12
		for i < len(q) && q[i] != 0 {
			l := int(q[i])
			if i+1+l > len(q) {
				break
			}
			name.Write(q[i+1 : i+1+l])
			name.WriteByte('.')
			i += 1 + l
		}
		if i+5 > len(q) {
			continue
		}
		qtype := binary.BigEndian.Uint16(q[i+1:])
		question := q[12 : i+5]
		resp := append([]byte(nil), q[:2]...)       // id
		flags := uint16(0x8400) | uint16(q[2]&1)<<8 // QR, AA, RD copied
		target, found := ptr[strings.ToLower(name.String())]
		if !found || qtype != 12 {
			flags |= 3 // NXDOMAIN
		}
		resp = binary.BigEndian.AppendUint16(resp, flags)
		resp = binary.BigEndian.AppendUint16(resp, 1)
		ans := uint16(0)
		if found && qtype == 12 {
			ans = 1
		}
		resp = binary.BigEndian.AppendUint16(resp, ans)
		resp = append(resp, 0, 0, 0, 0)
		resp = append(resp, question...)
		if ans == 1 {
			var rdata []byte
			for _, label := range strings.Split(strings.TrimSuffix(target, "."), ".") {
				rdata = append(append(rdata, byte(len(label))), label...)
			}
			rdata = append(rdata, 0)
			resp = append(resp, 0xc0, 12) // the question's name
			resp = binary.BigEndian.AppendUint16(resp, 12)
			resp = binary.BigEndian.AppendUint16(resp, 1)
			resp = binary.BigEndian.AppendUint32(resp, 60)
			resp = binary.BigEndian.AppendUint16(resp, uint16(len(rdata)))
			resp = append(resp, rdata...)
		}
		_, _ = c.WriteTo(resp, from)
	}
}
