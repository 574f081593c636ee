package procs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// scanProc walks root/PID/fd the way ss does (misc/ss.c,
// user_ent_hash_build): every numeric entry of root is a process, every link
// in its fd directory that reads "socket:[N]" is a socket descriptor, and the
// process name comes from root/PID/stat. Processes that exit or deny access
// mid-walk are skipped, as ss skips them. The entries come back in the order
// ss finds them (readdir order). The pids are spread over one worker per
// CPU: each process costs a handful of system calls that do not contend.
// With threads (ss -T), each process's other threads follow it, in the
// order root/PID/task lists them, each read as root/TID.
func scanProc(ctx context.Context, root string, threads bool) ([]entry, error) {
	dir, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", root, err)
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", root, err)
	}
	var pids []int32
	for _, n := range names {
		// ss accepts "%d" with nothing after it; non-numeric entries are
		// /proc's own files.
		pid, err := strconv.ParseInt(n, 10, 32)
		if err != nil || pid <= 0 {
			continue
		}
		pids = append(pids, int32(pid))
	}

	// Each worker writes the entries of the i-th pid to perPid[i], so that
	// the result keeps readdir order, the order ss's output depends on.
	perPid := make([][]entry, len(pids))
	jobs := make(chan int, len(pids))
	for i := range pids {
		jobs <- i
	}
	close(jobs)
	workers := min(runtime.GOMAXPROCS(0), max(1, len(pids)))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			link := make([]byte, 64)
			for i := range jobs {
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
				var err error
				if perPid[i], err = scanPid(root, pids[i], threads, link); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var total int
	for _, r := range perPid {
		total += len(r)
	}
	ents := make([]entry, 0, total)
	for _, r := range perPid {
		ents = append(ents, r...)
	}
	return ents, nil
}

// scanPid returns the socket descriptors of one process and, with
// threads, those of each of its other threads after them, as ss -T finds
// them.
func scanPid(root string, pid int32, threads bool, link []byte) ([]entry, error) {
	var tid int32
	if threads {
		tid = pid
	}
	ents, err := scanTask(root, pid, tid, nil, link)
	if err != nil || !threads {
		return ents, err
	}
	dir := filepath.Join(root, strconv.Itoa(int(pid)), "task")
	d, err := os.Open(dir)
	if err != nil {
		return ents, nil // gone, or not ours to read: ss skips it too
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, n := range names {
		t, err := strconv.ParseInt(n, 10, 32)
		if err != nil || int32(t) == pid {
			continue
		}
		if ents, err = scanTask(root, pid, int32(t), ents, link); err != nil {
			return ents, err
		}
	}
	return ents, nil
}

// scanTask appends the socket descriptors of one task to ents: the process
// pid itself (id == 0 or pid) or its thread id, read from root/ID. A task
// that vanished or is not readable yields nothing and no error: the walk is
// a snapshot of a moving system, and ss behaves the same way.
func scanTask(root string, pid, id int32, ents []entry, link []byte) ([]entry, error) {
	dirID := pid
	if id != 0 {
		dirID = id
	}
	procDir := filepath.Join(root, strconv.Itoa(int(dirID)))
	fdDir := procDir + "/fd"
	dfd, err := unix.Open(fdDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if skippable(err) {
			return ents, nil
		}
		return ents, fmt.Errorf("open %s: %w", fdDir, err)
	}
	d := os.NewFile(uintptr(dfd), fdDir)
	defer d.Close()
	fds, err := d.Readdirnames(-1)
	if err != nil {
		if skippable(err) {
			return ents, nil
		}
		return ents, fmt.Errorf("list %s: %w", fdDir, err)
	}
	comm, haveComm := "", false
	for _, name := range fds {
		fd, err := strconv.ParseInt(name, 10, 32)
		if err != nil {
			continue
		}
		n, err := unix.Readlinkat(dfd, name, link)
		if err != nil {
			// The descriptor was closed between readdir and readlink.
			continue
		}
		ino, ok := parseSocketLink(link[:n])
		if !ok {
			continue
		}
		if !haveComm {
			// Read once per process, at its first socket, as ss does.
			comm, haveComm = readComm(procDir)
		}
		ents = append(ents, entry{ino: ino, pid: pid, fd: int32(fd), comm: comm, tid: id})
	}
	return ents, nil
}

// skippable reports errors that mean "this process is gone or not ours to
// read", which the walk tolerates.
func skippable(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
}

var socketPrefix = []byte("socket:[")

// parseSocketLink extracts N from a "socket:[N]" fd link target.
func parseSocketLink(l []byte) (uint64, bool) {
	if !bytes.HasPrefix(l, socketPrefix) || len(l) < len(socketPrefix)+2 || l[len(l)-1] != ']' {
		return 0, false
	}
	ino, err := strconv.ParseUint(string(l[len(socketPrefix):len(l)-1]), 10, 64)
	if err != nil {
		return 0, false
	}
	return ino, true
}

// readComm reads the process name from PROCDIR/stat the way ss does: the
// text after "PID (" up to the first ')'. It reports false when the file is
// gone, in which case ss also prints an empty name.
func readComm(procDir string) (string, bool) {
	b, err := os.ReadFile(procDir + "/stat")
	if err != nil {
		return "", false
	}
	return parseStatComm(b), true
}

// parseStatComm extracts the name ss shows from the contents of
// /proc/PID/stat.
func parseStatComm(stat []byte) string {
	i := bytes.IndexByte(stat, '(')
	if i < 0 {
		return ""
	}
	return ssComm(stat[i+1:])
}
