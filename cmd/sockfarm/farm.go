package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sstrace/sstrace/pkg/sock"
)

// farm is the parent's view of a running population: its worker processes
// and a sock_diag socket in the namespace to check what the kernel holds.
type farm struct {
	opts    options
	target  mix
	ns      *nsThread
	diag    *diagCounter
	workers []*workerProc
	// Built is how long building took, up to every worker's ready line.
	Built time.Duration
}

// workerProc is one worker process and its request pipe.
type workerProc struct {
	plan   workerPlan
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	report workerReport
}

// startFarm builds the population: it checks the options, configures the
// namespace, starts the workers (re-executing exe) and waits until every
// one reports ready. On error nothing is left running.
func startFarm(o options, exe string, stderr io.Writer) (_ *farm, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	path, err := netnsPath(o.Netns)
	if err != nil {
		return nil, err
	}
	plans, err := planWorkers(o, path)
	if err != nil {
		return nil, err
	}
	f := &farm{opts: o}
	for _, p := range plans {
		f.target.Listen += p.Mix.Listen
		f.target.EstabPairs += p.Mix.EstabPairs
		f.target.CloseWait += p.Mix.CloseWait
		f.target.TimeWait += p.Mix.TimeWait
	}
	if f.ns, err = enterNS(path); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.stop()
		}
	}()
	if err := f.ns.do(func() error { return configureNS(o, f.target) }); err != nil {
		return nil, fmt.Errorf("configure netns %s: %w", o.Netns, err)
	}
	if err := f.ns.do(func() (err error) { f.diag, err = newDiagCounter(); return err }); err != nil {
		return nil, err
	}
	if c, err := f.diag.count(sock.AllStates); err != nil {
		return nil, err
	} else if c.Total() > 0 {
		// Two farms in one namespace would collide on ports and make
		// every count meaningless.
		return nil, fmt.Errorf("netns %s already holds %d TCP sockets (%s); use a fresh one (TIME-WAIT entries left by an earlier farm expire within 60 s)", o.Netns, c.Total(), c)
	}
	start := time.Now()
	for _, p := range plans {
		wp, err := f.spawn(p, exe, stderr)
		if err != nil {
			return nil, err
		}
		f.workers = append(f.workers, wp)
	}
	// Workers build in parallel; wait for all ready lines.
	errs := make([]error, len(f.workers))
	var wg sync.WaitGroup
	for i, w := range f.workers {
		wg.Go(func() { errs[i] = w.awaitReady() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	f.Built = time.Since(start)
	return f, nil
}

// spawn starts one worker from inside the namespace.
func (f *farm) spawn(p workerPlan, exe string, stderr io.Writer) (*workerProc, error) {
	plan, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), workerEnv+"="+string(plan))
	cmd.Stderr = stderr
	// If the parent dies without closing the pipes (SIGKILL), take the
	// workers with it rather than leave 20000 sockets behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := f.ns.do(cmd.Start); err != nil {
		return nil, fmt.Errorf("start worker %d: %w", p.Index, err)
	}
	return &workerProc{plan: p, cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}, nil
}

// awaitReady reads the worker's ready line.
func (w *workerProc) awaitReady() error {
	line, err := w.readLine()
	if err != nil {
		return err
	}
	js, ok := strings.CutPrefix(line, "ready ")
	if !ok {
		return fmt.Errorf("worker %d: unexpected line %q", w.plan.Index, line)
	}
	if err := json.Unmarshal([]byte(js), &w.report); err != nil {
		return fmt.Errorf("worker %d: bad ready line: %w", w.plan.Index, err)
	}
	return nil
}

// readLine reads one reply; when the worker has died it says how.
func (w *workerProc) readLine() (string, error) {
	if w.lines.Scan() {
		return w.lines.Text(), nil
	}
	err := w.cmd.Wait()
	w.cmd = nil
	if err == nil {
		err = errors.New("exited")
	}
	return "", fmt.Errorf("worker %d stopped (its message, if any, is above): %w", w.plan.Index, err)
}

// counts is what the kernel holds in the namespace now.
func (f *farm) counts() (stateCounts, error) { return f.diag.count(sock.AllStates) }

// settle waits until connections that are still closing have finished, so
// the ready line shows the steady population.
func (f *farm) settle(ctx context.Context, limit time.Duration) (stateCounts, error) {
	deadline := time.Now().Add(limit)
	for {
		c, err := f.counts()
		if err != nil || c.Transient() == 0 || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return c, nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// topUpTimeWait replaces the TIME-WAIT entries the kernel has expired
// (after its fixed 60 s), spreading the work over the workers. It returns
// how many it added.
func (f *farm) topUpTimeWait() (int, error) {
	c, err := f.diag.count(sock.StateSet(0).With(sock.TimeWait))
	if err != nil {
		return 0, err
	}
	deficit := f.target.TimeWait - c[sock.TimeWait]
	if deficit <= 0 {
		return 0, nil
	}
	added := 0
	for i, w := range f.workers {
		n := share(deficit, len(f.workers), i)
		if n == 0 || w.cmd == nil {
			continue
		}
		if _, err := fmt.Fprintf(w.stdin, "tw %d\n", n); err != nil {
			return added, fmt.Errorf("worker %d: %w", i, err)
		}
		line, err := w.readLine()
		if err != nil {
			return added, err
		}
		if msg, bad := strings.CutPrefix(line, "err "); bad {
			return added, fmt.Errorf("worker %d: %s", i, msg)
		}
		added += n
	}
	return added, nil
}

// stop ends every worker by closing its stdin, which makes it exit and the
// kernel close its sockets; a worker that does not exit within 10 s is
// killed. Calling it again does nothing.
func (f *farm) stop() error {
	var errs []error
	for _, w := range f.workers {
		if w.cmd != nil {
			w.stdin.Close()
		}
	}
	for _, w := range f.workers {
		if w.cmd == nil {
			continue
		}
		done := make(chan error, 1)
		go func() { done <- w.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("worker %d: %w", w.plan.Index, err))
			}
		case <-time.After(10 * time.Second):
			w.cmd.Process.Kill()
			<-done
			errs = append(errs, fmt.Errorf("worker %d did not exit in 10 s; killed", w.plan.Index))
		}
		w.cmd = nil
	}
	if f.diag != nil {
		f.diag.Close()
		f.diag = nil
	}
	if f.ns != nil {
		// Only now: the workers' parent-death signal is tied to it.
		close(f.ns.work)
		f.ns = nil
	}
	return errors.Join(errs...)
}

// pids lists the workers' process ids.
func (f *farm) pids() []int {
	var p []int
	for _, w := range f.workers {
		p = append(p, w.report.PID)
	}
	return p
}
