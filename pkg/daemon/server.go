package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sstrace/sstrace/pkg/procs"
	"github.com/sstrace/sstrace/pkg/table"
)

// Config configures a Server.
type Config struct {
	// Path is the socket's path (DefaultSocket when empty). Its directory
	// is created (0755) if missing; the socket is mode 0660, owned by
	// root and Group.
	Path string
	// Group is the gid allowed to connect besides root; -1 leaves the
	// socket to root's group (gid 0).
	Group int
	// Table is the daemon's table.
	Table *table.Table
	// Status returns what the daemon knows beyond the table (hook,
	// kernel, ...); the server fills the table's figures itself. nil:
	// table figures only.
	Status func() Status
	// Events subscribes to the table's event stream, for trace
	// (typically tbl.Subscribe(true, false, buf)). nil: trace is refused.
	Events func(buf int) *table.Subscription
	// Logger logs accepted requests and errors; nil discards.
	Logger *slog.Logger
	// Owners scans the host's processes for socket owners (ss -p live,
	// closewait). nil: a procs.Scanner made by Listen (the BPF iterator
	// loaded once, or /proc).
	Owners *procs.Scanner
}

// Server answers clients on a Unix socket. Make one with Listen, run it
// with Serve, stop it with Close or by ending Serve's context.
type Server struct {
	cfg Config
	ln  *net.UnixListener
	log *slog.Logger
	sem chan struct{}

	// scanMu serialises process scans: a procs.Scanner is not safe for
	// concurrent use.
	scanMu     sync.Mutex
	scanner    *procs.Scanner
	ownScanner bool

	mu      sync.Mutex
	closed  bool
	cancel  context.CancelFunc // ends in-flight requests
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	removed bool
}

// Listen creates the socket and returns a Server ready to Serve. An
// existing socket file is replaced only if no daemon answers on it.
func Listen(cfg Config) (*Server, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultSocket
	}
	if cfg.Table == nil {
		return nil, errors.New("daemon: no table")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if fi, err := os.Lstat(cfg.Path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", cfg.Path)
		}
		if c, err := net.DialTimeout("unix", cfg.Path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another sstrace daemon is listening on %s", cfg.Path)
		}
		// A stale socket of a daemon that died.
		if err := os.Remove(cfg.Path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Path, err)
	}
	// Serve removes the file itself, once, when it stops.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*Server, error) {
		ln.Close()
		os.Remove(cfg.Path)
		return nil, err
	}
	// Not world-writable: root and the group only (connect needs write
	// permission on the socket file).
	if err := os.Chmod(cfg.Path, 0o660); err != nil {
		return fail(fmt.Errorf("chmod %s: %w", cfg.Path, err))
	}
	if os.Geteuid() == 0 {
		gid := cfg.Group
		if gid < 0 {
			gid = 0
		}
		if err := os.Chown(cfg.Path, 0, gid); err != nil {
			return fail(fmt.Errorf("chown %s: %w", cfg.Path, err))
		}
	}
	s := &Server{
		cfg: cfg, ln: ln, log: log,
		sem:     make(chan struct{}, MaxClients),
		conns:   make(map[net.Conn]struct{}),
		scanner: cfg.Owners,
	}
	if s.scanner == nil {
		s.scanner = procs.NewScanner(procs.Options{})
		s.ownScanner = true
	}
	return s, nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.cfg.Path }

// Serve accepts clients until ctx ends or Close is called, then ends the
// requests in flight, waits for them and removes the socket file. It
// returns nil after a clean stop.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		return nil
	}
	s.cancel = cancel
	s.mu.Unlock()
	defer s.Close()

	go func() {
		<-ctx.Done()
		s.ln.Close() // ends Accept
	}()

	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || s.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Error("accept", "err", err)
			// Out of descriptors, say: do not spin.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			s.reject(c, fmt.Sprintf("too many clients (%d at once): try again", MaxClients))
			continue
		}
		if !s.track(c) {
			<-s.sem
			c.Close()
			return nil
		}
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			defer s.untrack(c)
			s.handle(ctx, c)
		}()
	}
}

// Close stops the server: no new clients, requests in flight end, the
// socket file is removed. It waits for the requests to end.
func (s *Server) Close() error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	for c := range s.conns {
		// Unblocks reads and writes of requests in flight.
		c.SetDeadline(time.Now())
	}
	s.mu.Unlock()
	var err error
	if first {
		err = s.ln.Close()
	}
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.removed {
		s.removed = true
		if rerr := os.Remove(s.cfg.Path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
		if s.ownScanner {
			s.scanner.Close()
		}
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track registers a connection; false once the server is closed.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// reject answers a client that cannot be served with one error frame.
func (s *Server) reject(c net.Conn, msg string) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(appendExit(nil, 1, msg))
	c.Close()
}

// readRequest reads one request line, at most MaxRequestBytes.
func readRequest(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxRequestBytes {
			return nil, ErrRequestTooLong
		}
		if err == nil {
			return line, nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return line, nil
		}
		return nil, err
	}
}

// handle serves one client: credentials, request, reply.
func (s *Server) handle(ctx context.Context, c *net.UnixConn) {
	peer, err := peerOf(c)
	if err != nil {
		s.log.Warn("client refused", "err", err)
		s.reject(c, err.Error())
		return
	}
	defer peer.close()
	c.SetReadDeadline(time.Now().Add(RequestReadTimeout))
	// The limit makes an over-long line end at once, not at the timeout.
	br := bufio.NewReaderSize(&io.LimitedReader{R: c, N: MaxRequestBytes + 1}, 4096)
	line, err := readRequest(br)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return // connected and left: a probe
		}
		s.log.Info("bad request", "pid", peer.PID, "uid", peer.UID, "err", err)
		s.reject(c, err.Error())
		return
	}
	req, err := DecodeRequest(line)
	if err != nil {
		s.log.Info("bad request", "pid", peer.PID, "uid", peer.UID, "err", err)
		s.reject(c, err.Error())
		return
	}
	c.SetReadDeadline(time.Time{})
	s.log.Debug("request", "op", req.Op, "pid", peer.PID, "uid", peer.UID, "netns", peer.NetNS)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !req.streaming() {
		ctx, cancel = context.WithTimeout(ctx, RequestTimeout)
		defer cancel()
	}
	// The client sends nothing more: a read that ends means it left
	// (Ctrl-C on a trace), which ends the request.
	go func() {
		var b [1]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				cancel()
				return
			}
		}
	}()
	w := newReplyWriter(c)
	code, err := s.run(ctx, peer, &req, w)
	msg := ""
	if err != nil {
		msg = err.Error()
		if code == 0 {
			code = 1
		}
		if ctx.Err() == nil {
			s.log.Debug("request failed", "op", req.Op, "pid", peer.PID, "err", err)
		}
	}
	w.finish(code, msg)
}

// replyWriter turns what a request prints into frames. Out buffers up to
// 64 KiB per frame; Err flushes Out first, so that the client sees the two
// in the order they were written.
type replyWriter struct {
	mu  sync.Mutex
	c   net.Conn
	out []byte
	buf []byte
	err error
	Out io.Writer
	Err io.Writer
}

const frameChunk = 64 << 10

func newReplyWriter(c net.Conn) *replyWriter {
	w := &replyWriter{c: c}
	w.Out = writerFunc(w.writeOut)
	w.Err = writerFunc(w.writeErr)
	return w
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (w *replyWriter) writeOut(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	w.out = append(w.out, p...)
	// Whole frames go out from an offset; the rest moves to the front
	// once (moving it after each frame made a large Write quadratic).
	off := 0
	for len(w.out)-off >= frameChunk {
		w.send("out", w.out[off:off+frameChunk])
		off += frameChunk
	}
	w.out = w.out[:copy(w.out, w.out[off:])]
	return len(p), w.err
}

func (w *replyWriter) writeErr(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	if w.err != nil {
		return 0, w.err
	}
	w.send("err", p)
	return len(p), w.err
}

// Flush sends the buffered output (streams call it as they go).
func (w *replyWriter) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	return w.err
}

func (w *replyWriter) flushLocked() {
	if len(w.out) > 0 && w.err == nil {
		w.send("out", w.out)
		w.out = w.out[:0]
	}
}

// send writes one frame (under mu).
func (w *replyWriter) send(key string, text []byte) {
	if w.err != nil {
		return
	}
	// The header, then the bytes as they are: one writev, no copy.
	w.buf = appendFrameHeader(w.buf[:0], key, len(text))
	w.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	bufs := net.Buffers{w.buf, text}
	if _, err := bufs.WriteTo(w.c); err != nil {
		w.err = fmt.Errorf("client gone: %w", err)
	}
}

// finish sends the rest of the output and the final frame.
func (w *replyWriter) finish(code int, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	if w.err != nil {
		return
	}
	w.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	w.c.Write(appendExit(nil, code, msg))
}
