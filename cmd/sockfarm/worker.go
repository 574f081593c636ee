package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

// workerEnv carries a worker's plan (JSON) to the re-executed binary; its
// presence is what makes the process a worker.
const workerEnv = "SOCKFARM_WORKER"

// fdHeadroom is what a worker keeps free beyond its plan: the Go runtime's
// own descriptors plus one batch of pairs under construction.
const fdHeadroom = 64

// workerReport is a worker's ready line: what it built and holds.
type workerReport struct {
	PID int `json:"pid"`
	mix
	FDs int `json:"fds"`
}

// worker builds and holds one process's share of the population. All socket
// work uses raw syscalls on blocking sockets: the Go netpoller would add a
// goroutine and an epoll registration per socket for nothing.
type worker struct {
	plan      workerPlan
	listeners []int // fds
	ports     []int // listeners' ports, same order
	next      int   // listener the next client connects to (round robin)
	client    int   // index of the next client endpoint (clientAddr)
	twBatches int   // TIME-WAIT batches made, to alternate the closing side
	held      int   // descriptors held for the population
	built     mix
}

// runWorker is the whole life of a worker process: check the namespace,
// build, report, then serve top-up requests until stdin closes.
func runWorker(planJSON string, in io.Reader, out io.Writer) error {
	var p workerPlan
	if err := json.Unmarshal([]byte(planJSON), &p); err != nil {
		return fmt.Errorf("bad %s: %w", workerEnv, err)
	}
	// Ctrl-C and a hang-up reach the whole process group; the parent
	// stops workers in order by closing their stdin instead.
	signal.Ignore(os.Interrupt, syscall.SIGHUP)
	ok, err := sameNetns(p.NetnsPath)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("worker %d is not in netns %s (it must be started from inside it)", p.Index, p.NetnsPath)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if need := uint64(p.Mix.FDs() + 2*p.Batch + fdHeadroom); lim.Cur < need {
		return fmt.Errorf("worker %d needs %d open files but RLIMIT_NOFILE is %d; lower --max-fds", p.Index, need, lim.Cur)
	}
	w := &worker{plan: p}
	if err := w.build(); err != nil {
		return fmt.Errorf("worker %d: %w", p.Index, err)
	}
	rep, err := json.Marshal(workerReport{PID: os.Getpid(), mix: w.built, FDs: w.held})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(out, "ready %s\n", rep); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		fmt.Fprintln(out, w.serve(sc.Text()))
	}
	return nil // stdin closed: exiting closes every socket
}

// serve answers one request line from the parent: "tw N" builds N more
// TIME-WAIT entries.
func (w *worker) serve(line string) string {
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "tw" {
		return fmt.Sprintf("err unknown request %q", line)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil || n < 0 {
		return fmt.Sprintf("err bad count %q", f[1])
	}
	if err := w.timeWait(n); err != nil {
		return "err " + err.Error()
	}
	return "ok " + f[1]
}

// build makes the listeners, then the connections in their final states.
func (w *worker) build() error {
	m := w.plan.Mix
	for i := 0; i < m.Listen; i++ {
		port := w.plan.FirstPort + i
		fd, err := listenOn(listenAddr(port))
		if err != nil {
			return err
		}
		w.listeners = append(w.listeners, fd)
		w.ports = append(w.ports, port)
		w.held++
		w.built.Listen++
	}
	if m.EstabPairs+m.CloseWait+m.TimeWait > 0 && len(w.listeners) == 0 {
		return errors.New("connections planned but no listener to accept them")
	}
	if err := w.established(m.EstabPairs); err != nil {
		return err
	}
	if err := w.closeWait(m.CloseWait); err != nil {
		return err
	}
	return w.timeWait(m.TimeWait)
}

// established makes n connected pairs and holds both ends. Every seventh
// server end is left with unread bytes, so Recv-Q is not always zero.
func (w *worker) established(n int) error {
	for n > 0 {
		b := min(n, w.plan.Batch)
		clients, servers, err := w.pairs(b)
		if err != nil {
			return err
		}
		for i, fd := range clients {
			if (w.built.EstabPairs+i)%7 == 0 {
				if _, err := unix.Write(fd, []byte("sockfarm: queued, never read\n")); err != nil {
					closeAll(clients, servers)
					return fmt.Errorf("write: %w", err)
				}
			}
		}
		w.held += len(clients) + len(servers)
		w.built.EstabPairs += b
		n -= b
	}
	return nil
}

// closeWait makes n connections whose client has closed while the server
// end stays open: a server that forgot to close, the usual source of
// CLOSE-WAIT.
//
// The client half-closes first and is closed only once the server has
// acknowledged its FIN. Closed earlier, in FIN-WAIT-1, an orphan that gets
// the ACK while close() still holds it stays a full socket whose FIN-WAIT-2
// timeout ends in a RST, which would kill the server's CLOSE-WAIT. Closed
// in FIN-WAIT-2 it becomes a timewait entry that lives tcp_fin_timeout and
// goes silently.
func (w *worker) closeWait(n int) error {
	for n > 0 {
		b := min(n, w.plan.Batch)
		clients, servers, err := w.pairs(b)
		if err != nil {
			return err
		}
		err = shutdownAll(clients)
		for _, fd := range clients {
			if err == nil {
				err = waitState(fd, sock.FinWait2)
			}
		}
		closeAll(clients)
		if err != nil {
			closeAll(servers)
			return err
		}
		w.held += len(servers)
		w.built.CloseWait += b
		n -= b
	}
	return nil
}

// timeWait makes n TIME-WAIT entries. Batches alternate which end closes
// first, so some entries sit on a listener's port (a server closing, as
// HTTP servers do) and some on a client port.
//
// Every step waits for the one before, and nothing is orphaned until the
// entry exists: the first end half-closes, the second reads the FIN and
// closes (LAST-ACK, its FIN goes out), which turns the first end, still
// held, into a TIME-WAIT entry at once; only then is it closed. No
// FIN-WAIT-2 timer can fire in between, and the second end never closes
// while a FIN is in flight (a simultaneous close leaves two entries).
func (w *worker) timeWait(n int) error {
	for n > 0 {
		b := min(n, w.plan.Batch)
		clients, servers, err := w.pairs(b)
		if err != nil {
			return err
		}
		first, second := servers, clients
		if w.twBatches%2 == 1 {
			first, second = clients, servers
		}
		w.twBatches++
		err = shutdownAll(first)
		for _, fd := range second {
			if err == nil {
				err = waitEOF(fd)
			}
			unix.Close(fd)
		}
		for _, fd := range first {
			if err == nil {
				err = waitState(fd, sock.Close)
			}
			unix.Close(fd)
		}
		if err != nil {
			return err
		}
		w.built.TimeWait += b
		n -= b
	}
	return nil
}

// pairs connects n clients round-robin over the worker's listeners and
// accepts them. Connecting a batch before accepting keeps the loop cheap;
// the batch stays below the listen backlog, so no SYN is ever dropped.
func (w *worker) pairs(n int) (clients, servers []int, err error) {
	perListener := make([]int, len(w.listeners))
	for range n {
		li := w.next
		w.next = (w.next + 1) % len(w.listeners)
		addr, err := clientAddr(w.plan.Index, w.client)
		if err != nil {
			closeAll(clients)
			return nil, nil, err
		}
		w.client++
		fd, err := dial(addr, w.ports[li])
		if err != nil {
			closeAll(clients)
			return nil, nil, w.fdError(err)
		}
		clients = append(clients, fd)
		perListener[li]++
	}
	for li, k := range perListener {
		for range k {
			fd, _, err := unix.Accept4(w.listeners[li], unix.SOCK_CLOEXEC)
			if err != nil {
				closeAll(clients, servers)
				return nil, nil, w.fdError(fmt.Errorf("accept on port %d: %w", w.ports[li], err))
			}
			servers = append(servers, fd)
		}
	}
	return clients, servers, nil
}

// fdError names the file limit when that is what ran out.
func (w *worker) fdError(err error) error {
	if errors.Is(err, unix.EMFILE) {
		return fmt.Errorf("%w (holding %d sockets; the per-process limit cannot be raised here, lower --max-fds)", err, w.held)
	}
	return err
}

func listenOn(a netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind listener %s: %w", a, err)
	}
	if err := unix.Listen(fd, 1024); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen on %s: %w", a, err)
	}
	return fd, nil
}

// dial connects from an explicit client endpoint to 127.0.0.1:port. On
// loopback the handshake completes inside connect().
func dial(from netip.AddrPort, port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(from.Port()), Addr: from.Addr().As4()}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind client %s: %w", from, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s -> 127.0.0.1:%d: %w", from, port, err)
	}
	return fd, nil
}

// waitEOF reads until the peer's FIN arrives, giving up after 5 s so a
// lost FIN is an error instead of a hang.
func waitEOF(fd int) error {
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		return fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	var b [256]byte
	for {
		n, err := unix.Read(fd, b[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for the peer's FIN: %w", err)
		}
		if n == 0 {
			return nil
		}
	}
}

// shutdownAll half-closes every socket: each sends its FIN but stays open.
func shutdownAll(fds []int) error {
	for _, fd := range fds {
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
	}
	return nil
}

// waitState polls a socket until the kernel reports the given TCP state.
// The wait is for a delayed ACK on loopback (tens of milliseconds); 5 s
// without it is an error, not a hang.
func waitState(fd int, want sock.State) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return fmt.Errorf("TCP_INFO: %w", err)
		}
		if sock.State(info.State) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("socket stuck in state %s, waited 5 s for %s", sock.State(info.State), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func closeAll(fdss ...[]int) {
	for _, fds := range fdss {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}
