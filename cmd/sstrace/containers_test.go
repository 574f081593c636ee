package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/cgroup2"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// The container tests run clients in cgroups named like container
// runtimes'. A client is this test binary again, in the role
// envClientNetNS selects: started in its cgroup (clone3 with
// CLONE_INTO_CGROUP), it enters the network namespace at that path and
// obeys lines on stdin: "dial ADDR" (prints the local port), "eof PORT"
// (reads until the peer has closed, then prints "ok") and "close PORT"
// (prints "ok"); it exits when stdin closes.
const envClientNetNS = "SSTRACE_TEST_CLIENT_NETNS"

func init() {
	// The client's sockets are made on the thread that entered the
	// namespace: keep the main goroutine on it.
	if os.Getenv(envClientNetNS) != "" {
		runtime.LockOSThread()
	}
}

// runClient is the client role; it returns the exit status.
func runClient(nsPath string) int {
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(fd, unix.CLONE_NEWNET)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client: enter", nsPath+":", err)
		return 1
	}
	conns := map[string]net.Conn{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		verb, arg, _ := strings.Cut(sc.Text(), " ")
		switch verb {
		case "dial":
			c, err := net.Dial("tcp4", arg)
			if err != nil {
				fmt.Fprintln(os.Stderr, "client:", err)
				return 1
			}
			port := strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port)
			conns[port] = c
			fmt.Println(port)
		case "eof":
			io.Copy(io.Discard, conns[arg])
			fmt.Println("ok")
		case "close":
			conns[arg].Close()
			delete(conns, arg)
			fmt.Println("ok")
		}
	}
	return 0
}

// client is a running client process.
type client struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startClient starts a client in cgroup cg and namespace ns; it is stopped
// at the end of the test if it is still running.
func startClient(t *testing.T, ns *testutil.NS, cg *testutil.Cgroup) *client {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envClientNetNS+"=/run/netns/"+ns.Name)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.Open(t)}
	cmd.Stderr = os.Stderr
	in, errIn := cmd.StdinPipe()
	out, errOut := cmd.StdoutPipe()
	if err := errors.Join(errIn, errOut); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		testutil.Unavailable(t, "start a process in cgroup %s: %v", cg.Path, err)
	}
	c := &client{t: t, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(c.stop)
	return c
}

// do sends one command and returns the client's answer.
func (c *client) do(format string, args ...any) string {
	c.t.Helper()
	fmt.Fprintf(c.in, format+"\n", args...)
	if !c.out.Scan() {
		c.t.Fatalf("client %d: no answer to %q", c.cmd.Process.Pid, fmt.Sprintf(format, args...))
	}
	return c.out.Text()
}

// dial connects to addr and returns the local port.
func (c *client) dial(addr string) int {
	c.t.Helper()
	port, err := strconv.Atoi(c.do("dial %s", addr))
	if err != nil {
		c.t.Fatal(err)
	}
	return port
}

// stop ends the client and waits for it.
func (c *client) stop() {
	if c.in.Close() == nil {
		c.cmd.Wait()
	}
}

// TestDaemonContainers: connections made by processes in cgroups named as
// Docker, containerd under Kubernetes, CRI-O and podman name them, are in
// `history --json` and `closewait --json` with their cgroup path and
// container id, and `cgroup PATH` and `container PREFIX` select them: a
// socket made before the daemon started (its owner found by the seed's
// process scan) and a connection whose cgroup was removed after it closed
// included. The text forms say the same.
func TestDaemonContainers(t *testing.T) {
	ns := testutil.NewNS(t)
	bin := sstraceBinary(t)
	hex := func(seed string) string { return strings.Repeat(seed, 64/len(seed)) }
	dockerID, kubeID, crioID, podmanID := hex("d0c4e2"+"ab"), hex("c0de"), hex("c410"), hex("9dab")
	base := fmt.Sprintf("/sstrace-test-%d.slice", os.Getpid())
	docker := testutil.NewCgroup(t, base+"/docker-"+dockerID+".scope")
	kube := testutil.NewCgroup(t, base+"/kubepods-burstable.slice/kubepods-burstable-pod3c1e5a7f_9b2d_4e6f_8a0c_1e3d5f7b9a2c.slice/cri-containerd-"+kubeID+".scope")
	crio := testutil.NewCgroup(t, base+"/crio-"+crioID+".scope")
	podman := testutil.NewCgroup(t, base+"/libpod-"+podmanID+".scope")

	// The server: this process, in the namespace; it closes the
	// connections the test tells it to.
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		testutil.Unavailable(t, "listen in a namespace: %v", err)
	}
	defer ln.Close()
	var mu sync.Mutex
	accepted := map[int]net.Conn{}
	arrived := sync.NewCond(&mu)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted[c.RemoteAddr().(*net.TCPAddr).Port] = c
			arrived.Broadcast()
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range accepted {
			c.Close()
		}
	}()
	closeServerSide := func(port int) { // the client's side goes to CLOSE-WAIT
		mu.Lock()
		defer mu.Unlock()
		for accepted[port] == nil {
			arrived.Wait()
		}
		accepted[port].Close()
	}
	addr := ln.Addr().String()

	// Before the daemon: one connection kept, one the server closes.
	seeded := startClient(t, ns, crio)
	seededOpen, seededCW := seeded.dial(addr), seeded.dial(addr)
	closeServerSide(seededCW)

	d := startDaemon(t, bin)
	dock := startClient(t, ns, docker)
	dockShort, dockCW := dock.dial(addr), dock.dial(addr)
	dock.do("close %d", dockShort)
	closeServerSide(dockShort)
	closeServerSide(dockCW)
	kubeClient := startClient(t, ns, kube)
	kubePort := kubeClient.dial(addr)
	kubeClient.do("close %d", kubePort)
	closeServerSide(kubePort)
	pod := startClient(t, ns, podman)
	podPort := pod.dial(addr)
	pod.do("close %d", podPort)
	closeServerSide(podPort)
	pod.stop()

	// history, by the client's port in the test's namespace.
	clients := func(args ...string) map[int]map[string]any {
		t.Helper()
		out := d.run(t, append([]string{"history", "--socket", d.sock, "--all-netns", "--json"}, args...)...)
		got := map[int]map[string]any{}
		for _, c := range jsonLines(t, out) {
			if uint64(num(c, "netns")) == ns.Inode && c["saddr"] == "127.0.0.1" && num(c, "dport") == ln.Addr().(*net.TCPAddr).Port {
				got[num(c, "sport")] = c
			}
		}
		return got
	}
	// The podman client's connection is applied (its cgroup named)
	// before the cgroup goes.
	for deadline := time.Now().Add(5 * time.Second); clients("sport", "=", strconv.Itoa(podPort))[podPort] == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("history never showed the podman client's connection")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := podman.Remove(); err != nil {
		t.Fatal(err)
	}

	want := map[int]struct {
		cg        *testutil.Cgroup
		container string
		pid       int
		state     string // "" for a closed one: TIME_WAIT or CLOSED
	}{
		seededOpen: {crio, crioID, seeded.cmd.Process.Pid, "ESTABLISHED"},
		seededCW:   {crio, crioID, seeded.cmd.Process.Pid, "CLOSE_WAIT"},
		dockShort:  {docker, dockerID, dock.cmd.Process.Pid, ""},
		dockCW:     {docker, dockerID, dock.cmd.Process.Pid, "CLOSE_WAIT"},
		kubePort:   {kube, kubeID, kubeClient.cmd.Process.Pid, ""},
		podPort:    {podman, podmanID, pod.cmd.Process.Pid, ""},
	}
	all := clients()
	for port, w := range want {
		c := all[port]
		if c == nil {
			t.Errorf("history: no connection from port %d", port)
			continue
		}
		if c["cgroup"] != w.cg.Path || c["container"] != w.container || num(c, "pid") != w.pid ||
			uint64(num(c, "cgroup_id")) != w.cg.ID || (w.state != "" && c["state"] != w.state) {
			t.Errorf("history of port %d: pid %v state %v cgroup %v (id %v) container %v; want %d %s %s (%d) %s",
				port, c["pid"], c["state"], c["cgroup"], c["cgroup_id"], c["container"], w.pid, w.state, w.cg.Path, w.cg.ID, w.container)
		}
	}
	if c := all[seededOpen]; c != nil && c["origin"] != "before-start" {
		t.Errorf("seeded connection: origin %v", c["origin"])
	}
	// The server's sides: this process's cgroup.
	ownPath, err := cgroup2.ProcessPath(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	servers := 0
	for _, c := range jsonLines(t, d.run(t, "history", "--socket", d.sock, "--all-netns", "--json", "sport", "=", ":"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))) {
		if uint64(num(c, "netns")) != ns.Inode || c["origin"] != "accept" {
			continue
		}
		servers++
		if c["cgroup"] != ownPath || c["container"] != nilIfEmpty(cgroup2.ContainerID(ownPath)) {
			t.Errorf("server side: cgroup %v container %v; want this process's %s", c["cgroup"], c["container"], ownPath)
		}
	}
	if servers != 4 {
		t.Errorf("%d accepted server sides in history, want 4", servers)
	}

	// Filters.
	ports := func(m map[int]map[string]any) string {
		var ps []string
		for p := range m {
			ps = append(ps, strconv.Itoa(p))
		}
		return strings.Join(sortedLines(strings.Join(ps, "\n")), ",")
	}
	expect := func(ps ...int) string {
		var s []string
		for _, p := range ps {
			s = append(s, strconv.Itoa(p))
		}
		return strings.Join(sortedLines(strings.Join(s, "\n")), ",")
	}
	for _, f := range []struct {
		args []string
		want string
	}{
		{[]string{"container", dockerID[:12]}, expect(dockShort, dockCW)},
		{[]string{"container " + strings.ToUpper(crioID[:8])}, expect(seededOpen, seededCW)},
		{[]string{"cgroup", kube.Path}, expect(kubePort)},
		{[]string{"cgroup = " + podman.Path}, expect(podPort)}, // removed: by its path
		{[]string{"cgroup", podman.Dir}, expect(podPort)},      // under the mount point too
		{[]string{"state", "close-wait", "container", crioID}, expect(seededCW)},
		{[]string{"container " + dockerID[:6] + " or container " + kubeID[:6]}, expect(dockShort, dockCW, kubePort)},
		{[]string{"!", "container", dockerID[:4], "and", "cgroup", "!=", crio.Path}, expect(kubePort, podPort)},
	} {
		if got := ports(clients(f.args...)); got != f.want {
			t.Errorf("history %q: ports %s, want %s", f.args, got, f.want)
		}
	}

	// closewait: both CLOSE-WAIT sockets, each with its container.
	cw := map[int]map[string]any{}
	for _, c := range jsonLines(t, d.run(t, "closewait", "--socket", d.sock, "--all-netns", "--json")) {
		if uint64(num(c, "netns")) == ns.Inode {
			cw[num(c, "sport")] = c
		}
	}
	for _, port := range []int{seededCW, dockCW} {
		w := want[port]
		if c := cw[port]; c == nil || c["container"] != w.container || c["cgroup"] != w.cg.Path {
			t.Errorf("closewait of port %d: %v; want container %s in %s", port, c, w.container, w.cg.Path)
		}
	}
	if len(cw) != 2 {
		t.Errorf("closewait: %d sockets in the namespace, want 2", len(cw))
	}
	only := jsonLines(t, d.run(t, "closewait", "--socket", d.sock, "--all-netns", "--json", "container", dockerID[:12]))
	if len(only) != 1 || num(only[0], "sport") != dockCW {
		t.Errorf("closewait container %s: %v", dockerID[:12], only)
	}
	text := d.run(t, "closewait", "--socket", d.sock, "--all-netns", "cgroup "+docker.Path+" or cgroup "+crio.Path)
	for _, s := range []string{
		fmt.Sprintf("(pid %d, container %s): 1 socket in CLOSE-WAIT", dock.cmd.Process.Pid, dockerID[:12]),
		fmt.Sprintf("(pid %d, container %s): 1 socket in CLOSE-WAIT", seeded.cmd.Process.Pid, crioID[:12]),
		"CLOSE-WAIT by container:\n",
		dockerID[:12] + " " + docker.Path + "\n",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("closewait text lacks %q:\n%s", s, text)
		}
	}
	verbose := d.run(t, "history", "--socket", d.sock, "--all-netns", "-v", "container", kubeID)
	if !strings.Contains(verbose, "\n        cgroup "+kube.Path+" container "+kubeID[:12]+"\n") {
		t.Errorf("history -v lacks the cgroup line:\n%s", verbose)
	}

	// A bad container id: one line, exit status 2.
	cmd := exec.Command(bin, "history", "--socket", d.sock, "container", "nothex")
	msg, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 ||
		strings.Count(string(msg), "\n") != 1 || !strings.Contains(string(msg), `filter: bad container "nothex" at word 2`) {
		t.Errorf("history container nothex: %v: %q", err, msg)
	}
}

// nilIfEmpty is what a JSON key left out decodes to.
func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
