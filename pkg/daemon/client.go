package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// NoDaemonError says that no daemon listens at a path: the one line a
// client prints when the daemon is not running.
type NoDaemonError struct {
	Path string
	Err  error
}

// Error tells the user how to get a daemon.
func (e *NoDaemonError) Error() string {
	if errors.Is(e.Err, os.ErrPermission) {
		return fmt.Sprintf("cannot connect to the sstrace daemon at %s: permission denied (root, or the daemon's --group, may connect)", e.Path)
	}
	return fmt.Sprintf("no sstrace daemon at %s: start one with `sstrace daemon`", e.Path)
}

// Unwrap returns the dial error.
func (e *NoDaemonError) Unwrap() error { return e.Err }

// Result is how a request ended on the daemon's side.
type Result struct {
	// Exit is the exit status the daemon sent.
	Exit int
	// Error is its one-line error message, "" for none.
	Error string
}

// ErrClosed is Do's error when the daemon closes the connection without
// its exit frame: it stopped (or crashed) while answering.
var ErrClosed = errors.New("the sstrace daemon closed the connection before answering (did it stop?)")

// Do sends req to the daemon at path and copies the reply's frames to
// stdout and stderr as they come, until the final frame. Ending ctx closes
// the connection, which ends a streaming request on the daemon's side;
// Do then returns ctx's error.
func Do(ctx context.Context, path string, req Request, stdout, stderr io.Writer) (Result, error) {
	line, err := EncodeRequest(req)
	if err != nil {
		return Result{}, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrPermission) {
			return Result{}, &NoDaemonError{Path: path, Err: err}
		}
		return Result{}, fmt.Errorf("connect to the sstrace daemon at %s: %w", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if _, err := c.Write(line); err != nil {
		return Result{}, fmt.Errorf("send request: %w", err)
	}
	r := bufio.NewReaderSize(c, 64<<10)
	var buf []byte
	for {
		f, err := ReadFrame(r, &buf)
		if err != nil {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return Result{}, ErrClosed
			}
			return Result{}, fmt.Errorf("read reply: %w", err)
		}
		switch {
		case f.Exit != nil:
			return Result{Exit: *f.Exit, Error: f.Error}, nil
		case f.Out > 0:
			if _, err := stdout.Write(buf); err != nil {
				return Result{}, err
			}
		case f.Err > 0:
			if _, err := stderr.Write(buf); err != nil {
				return Result{}, err
			}
		}
	}
}
