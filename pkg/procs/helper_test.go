package procs

// The privileged tests need processes that hold sockets in known ways. They
// re-execute the test binary in a helper role chosen by the environment:
//
//	holder: creates TCP, UDP and UNIX sockets (optionally inside a netns),
//	        dups one, hides one in a thread with a private fd table, passes two
//	        to a "sharer" child, prints the inodes as JSON and waits for stdin
//	        to close.
//	scan:   runs Scan and prints the source and the reason, one per line.
//	pairs:  holds $SSTRACE_PROCS_SOCKETS UNIX sockets (socketpairs), prints
//	        "ready" and waits for stdin to close: load for the benchmark.
//	sharer: inherits two sockets as fds 3 and 4, dups fd 3, renames itself,
//	        prints "ready" and waits for stdin to close.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

const (
	envRole  = "SSTRACE_PROCS_HELPER"
	envNetNS = "SSTRACE_PROCS_NETNS"
	envCount = "SSTRACE_PROCS_SOCKETS"
)

// Names the holder and sharer give themselves; the sharer's contains a ')'
// and a space to check that both paths cut the name where ss does.
const (
	holderComm = "sst-holder"
	sharerComm = "sst sh)arer"
)

func init() {
	// Keep the helper's main goroutine on the main thread (the thread-group
	// leader), so that the thread that unshares its fd table is never the
	// leader whose table /proc/PID/fd shows.
	if os.Getenv(envRole) != "" {
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "":
		os.Exit(m.Run())
	case "holder":
		if err := runHolder(); err != nil {
			fmt.Fprintln(os.Stderr, "holder:", err)
			os.Exit(1)
		}
	case "sharer":
		if err := runSharer(); err != nil {
			fmt.Fprintln(os.Stderr, "sharer:", err)
			os.Exit(1)
		}
	case "scan":
		ix, err := Scan(context.Background(), Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "scan:", err)
			os.Exit(1)
		}
		fmt.Printf("%s\n%s\n", ix.Source(), ix.Reason())
	case "pairs":
		if err := runPairs(); err != nil {
			fmt.Fprintln(os.Stderr, "pairs:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envRole, os.Getenv(envRole))
		os.Exit(2)
	}
	os.Exit(0)
}

// holderReport is what the holder prints: its pid, its child's pid, and the
// inode of every socket it made, by name.
type holderReport struct {
	Holder int               `json:"holder"`
	Sharer int               `json:"sharer"`
	Inodes map[string]uint64 `json:"inodes"`
	// FDs lists the holder's own descriptors per socket name.
	FDs map[string][]int `json:"fds"`
}

func setComm(name string) error {
	// /proc/self/comm names the thread-group leader, which is what
	// /proc/PID/stat and the iterator report.
	return os.WriteFile("/proc/self/comm", []byte(name), 0)
}

func enterNetNS() error {
	path := os.Getenv(envNetNS)
	if path == "" {
		return nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", path, err)
	}
	return nil
}

func inodeOf(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// loopbackTCP returns a listener, a client connected to it and the accepted
// server end.
func loopbackTCP() (l, c, s int, err error) {
	lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if l, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		return
	}
	if err = unix.Bind(l, lo); err != nil {
		return
	}
	if err = unix.Listen(l, 16); err != nil {
		return
	}
	sa, err := unix.Getsockname(l)
	if err != nil {
		return
	}
	if c, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		return
	}
	if err = unix.Connect(c, sa); err != nil {
		return
	}
	s, _, err = unix.Accept4(l, unix.SOCK_CLOEXEC)
	return
}

func loopbackUDP() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	return fd, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
}

func runHolder() error {
	if err := setComm(holderComm); err != nil {
		return err
	}
	// The main goroutine is locked to the leader thread (see init), so the
	// namespace switch applies to every socket made below.
	if err := enterNetNS(); err != nil {
		return err
	}
	rep := holderReport{Holder: os.Getpid(), Inodes: map[string]uint64{}, FDs: map[string][]int{}}
	fds := map[string]int{}
	var err error
	if fds["listen"], fds["client"], fds["server"], err = loopbackTCP(); err != nil {
		return fmt.Errorf("tcp: %w", err)
	}
	if fds["udp"], err = loopbackUDP(); err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	fds["unix1"], fds["unix2"] = pair[0], pair[1]
	for name, fd := range fds {
		if rep.Inodes[name], err = inodeOf(fd); err != nil {
			return fmt.Errorf("fstat %s: %w", name, err)
		}
		rep.FDs[name] = append(rep.FDs[name], fd)
	}
	// A second descriptor for the listener and for one UNIX end.
	for _, name := range []string{"listen", "unix1"} {
		// CLOEXEC, so that only the descriptors chosen below reach the sharer.
		d, err := unix.FcntlInt(uintptr(fds[name]), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("dup %s: %w", name, err)
		}
		rep.FDs[name] = append(rep.FDs[name], d)
	}

	// An O_PATH descriptor on a bound UNIX socket's filesystem node: its
	// inode has the socket mode bits, but it is not a socket file and /proc
	// shows its path, so no index may list it.
	dir, err := os.MkdirTemp("", "sstrace-procs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bound, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix socket: %w", err)
	}
	path := dir + "/sock"
	if err := unix.Bind(bound, &unix.SockaddrUnix{Name: path}); err != nil {
		return fmt.Errorf("bind %s: %w", path, err)
	}
	if rep.Inodes["bound"], err = inodeOf(bound); err != nil {
		return err
	}
	rep.FDs["bound"] = []int{bound}
	opath, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s O_PATH: %w", path, err)
	}
	rep.FDs["opath"] = []int{opath}

	// A thread with a private descriptor table holding one more socket:
	// /proc/PID/fd shows the leader's table only, so ss lists no process
	// for it, and neither may we.
	hidden := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the process
		if err := enterNetNS(); err != nil {
			hidden <- err
			return
		}
		if err := unix.Unshare(unix.CLONE_FILES); err != nil {
			hidden <- fmt.Errorf("unshare files: %w", err)
			return
		}
		fd, err := loopbackUDP()
		if err != nil {
			hidden <- err
			return
		}
		ino, err := inodeOf(fd)
		rep.Inodes["hidden"] = ino
		hidden <- err
		select {}
	}()
	if err := <-hidden; err != nil {
		return fmt.Errorf("hidden thread: %w", err)
	}

	// The sharer inherits the listener and a UNIX end as fds 3 and 4.
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envRole+"=sharer", envNetNS+"=")
	extra := []*os.File{
		os.NewFile(uintptr(fds["listen"]), "listen"),
		os.NewFile(uintptr(fds["unix1"]), "unix1"),
	}
	// The *os.File wrappers close their fd when collected; keep them until
	// the end so the holder's own descriptors stay open.
	defer runtime.KeepAlive(extra)
	cmd.ExtraFiles = extra
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sharer: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		return fmt.Errorf("sharer did not get ready: %q, %v", line, err)
	}
	rep.Sharer = cmd.Process.Pid
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	stdin.Close()
	return cmd.Wait()
}

func runSharer() error {
	if err := setComm(sharerComm); err != nil {
		return err
	}
	if _, err := unix.Dup(3); err != nil {
		return fmt.Errorf("dup 3: %w", err)
	}
	if _, err := os.Stdout.WriteString("ready\n"); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// startHolder runs a holder (in the named network namespace when netnsPath is
// not empty) and returns its report; the holder and sharer exit when the test
// ends.
func startHolder(t *testing.T, netnsPath string) holderReport {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=holder", envNetNS+"="+netnsPath)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start holder: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("holder exited: %v", err)
		}
	})
	var rep holderReport
	if err := json.NewDecoder(out).Decode(&rep); err != nil {
		t.Fatalf("read holder report: %v", err)
	}
	return rep
}

// makePairs opens n UNIX sockets as n/2 socketpairs and returns their fds.
func makePairs(n int) ([]int, error) {
	fds := make([]int, 0, n)
	for len(fds)+1 < n {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("socketpair %d of %d: %w", len(fds)/2+1, n/2, err)
		}
		fds = append(fds, p[0], p[1])
	}
	return fds, nil
}

func runPairs() error {
	n, err := strconv.Atoi(os.Getenv(envCount))
	if err != nil {
		return fmt.Errorf("%s: %w", envCount, err)
	}
	if _, err := makePairs(n); err != nil {
		return err
	}
	if _, err := os.Stdout.WriteString("ready\n"); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// startPairs runs a pairs helper holding n sockets until the test ends.
func startPairs(tb testing.TB, n int) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=pairs", envCount+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start pairs helper: %v", err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		tb.Fatalf("pairs helper did not get ready: %q, %v", line, err)
	}
}
