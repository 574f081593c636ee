package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestSSEventsTransitions: `ss -E --transitions` prints each TCP socket as
// it enters a state. Two followers run while clients close first: one with
// -a sees each client's states in order, TIME-WAIT included; one with
// `state close-wait` prints each server side as it enters CLOSE-WAIT, the
// one still there as the real ss lists it (queues aside, which no
// transition carries); and through the daemon's stream the same.
func TestSSEventsTransitions(t *testing.T) {
	ns := requireSS(t)
	bin := sstraceBinary(t)
	type follower struct {
		cmd *exec.Cmd
		out lockedBuffer
	}
	start := func(args ...string) *follower {
		f := &follower{cmd: exec.Command(bin, append([]string{"ss", "-N", ns.Name, "-E", "--transitions"}, args...)...)}
		f.cmd.Stdout = &f.out
		stderr, err := f.cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := f.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.cmd.Process.Kill(); f.cmd.Wait() })
		line, err := bufio.NewReader(stderr).ReadString('\n')
		if !strings.Contains(line, "following TCP transitions") {
			testutil.Unavailable(t, "ss -E --transitions did not start: %q %v", line, err)
		}
		go io.Copy(io.Discard, stderr)
		return f
	}
	all := start("-tan")
	cw := start("-tnp", "state", "close-wait")
	// The same through the daemon: its table's stream, no BPF of ours.
	d := startDaemon(t, bin)
	cwd := start("--socket", d.sock, "-tnp", "state", "close-wait")

	// Two connections: the first client shuts its side down and the
	// server closes (the client's socket goes TIME-WAIT itself, which a
	// transition shows); the second client closes outright while the
	// server keeps its side (the client becomes an orphaned FIN-WAIT-2
	// minisocket, the server stays in CLOSE-WAIT).
	var clientPorts [2]int
	var keep net.Conn
	err := ns.Do(func() error {
		ln, err := testutil.ListenTCP4()
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		for i := range clientPorts {
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				return err
			}
			s, err := ln.Accept()
			if err != nil {
				return err
			}
			clientPorts[i] = c.LocalAddr().(*net.TCPAddr).Port
			if i == 1 {
				keep = s
				return c.Close()
			}
			c.(*net.TCPConn).CloseWrite()
			if _, err := s.Read(make([]byte, 1)); err != io.EOF {
				return fmt.Errorf("server read: %v, want EOF", err)
			}
			s.Close()
			time.Sleep(50 * time.Millisecond)
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keep.Close() })
	// Rows come within the tracer's flush interval; on a loaded machine
	// later: wait for the last ones expected (the second client's
	// FIN-WAIT-2, both CLOSE-WAIT rows) before stopping the followers.
	lastClient := fmt.Sprintf(":%d ", clientPorts[1])
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(all.out.String(), "FIN-WAIT-2") && strings.Count(all.out.String(), lastClient) >= 3 &&
			strings.Count(cw.out.String(), "\n") >= 3 {
			break
		}
	}
	for deadline := time.Now().Add(5 * time.Second); cwd.out.String() != cw.out.String() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	for _, f := range []*follower{all, cw, cwd} {
		f.cmd.Process.Signal(unix.SIGINT)
		if err := f.cmd.Wait(); err != nil {
			t.Errorf("%v: %v", f.cmd.Args, err)
		}
	}

	for i, want := range []string{"ESTAB FIN-WAIT-1 FIN-WAIT-2 TIME-WAIT", "ESTAB FIN-WAIT-1 FIN-WAIT-2"} {
		var states []string
		for _, l := range strings.Split(all.out.String(), "\n") {
			if f := strings.Fields(l); len(f) >= 5 && strings.HasSuffix(f[3], ":"+strconv.Itoa(clientPorts[i])) {
				states = append(states, f[0])
			}
		}
		if got := strings.Join(states, " "); got != want {
			t.Errorf("client %d's rows in -tan: %s, want %s\n%s", i, got, want, all.out.String())
		}
	}

	// Queues blanked: Recv-Q and Send-Q are the first two columns here.
	rows := func(out string, header bool) []string {
		var r []string
		for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(l); (i > 0 || !header) && len(f) >= 4 {
				r = append(r, strings.Join(f[2:], " "))
			}
		}
		return r
	}
	// The first server side entered CLOSE-WAIT too, and left it; ss
	// lists the second, which stayed.
	want := rows(runReal(t, []string{"-N", ns.Name, "-Htn", "state", "close-wait"}), false)
	got := rows(cw.out.String(), true)
	comm := filepath.Base(os.Args[0]) // the kernel keeps 15 bytes of it
	comm = comm[:min(len(comm), 15)]
	owner := fmt.Sprintf(` users:((%q,pid=%d,fd=-1))`, comm, os.Getpid())
	if len(want) != 1 || len(got) != 2 || got[1] != want[0]+owner {
		t.Errorf("state close-wait: sstrace\n%s\nss lists\n%s", cw.out.String(), strings.Join(want, "\n"))
	}

	if cwd.out.String() != cw.out.String() {
		t.Errorf("state close-wait through the daemon:\n%s\nlocally:\n%s", cwd.out.String(), cw.out.String())
	}

	// --transitions is -E's: alone it is rejected as ss rejects options.
	cmd := exec.Command(bin, "ss", "--transitions", "-tn")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 255 || !strings.Contains(stderr.String(), "-E") {
		t.Errorf("--transitions without -E: %v, %q", err, stderr.String())
	}
}

// lockedBuffer is a bytes.Buffer a running command writes to while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
