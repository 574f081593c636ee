// Package daemon serves the sstrace daemon's table to its clients over a
// Unix stream socket, and is the client side of the same protocol: `sstrace
// ss --socket`, `history`, `closewait`, `status --socket` and `trace
// --socket` all send one request and copy the reply to their terminal.
//
// # Protocol
//
// A client connects to the socket (default DefaultSocket) and writes one
// request: a JSON object on one line, at most MaxRequestBytes long:
//
//	{"op":"history","args":["dport","=",":443"],"since":"2025-01-02T15:04:05Z","json":true}
//
// op is "ss", "history", "closewait", "status", "trace" or "top"; the other keys
// are described on Request. Times are absolute (RFC 3339): the client
// resolves a relative time such as "-30s" against its own clock
// (ParseTime), so that the daemon never guesses what "now" meant.
//
// The daemon answers with a stream of frames, each a JSON header on one
// line; an output frame's header gives a byte count, and that many bytes
// follow the newline as they are, unescaped:
//
//	{"out":N}\n<N bytes>      bytes for the client's standard output
//	{"err":N}\n<N bytes>      bytes for its standard error
//	{"exit":0}               the last frame: the exit status
//	{"exit":1,"error":"..."} the last frame of a failed request
//
// A client copies out and err bytes as they come and exits with the final
// status, printing the error (one line) if there is one. Streaming requests
// (trace, top, history with follow) send frames until the client closes the
// connection or the daemon stops. Why raw bytes after a header rather than
// the text in a JSON string: an ss answer is megabytes of text, and escaping
// it on one side and decoding it on the other cost more than the query
// (about 80 ms of a 100 000-socket -tan); the bytes also arrive exactly as
// written, invalid UTF-8 included (a process name is any bytes).
//
// # Limits
//
// Every request is bounded, so a client cannot make the daemon use
// unbounded memory or time: the request line (MaxRequestBytes; a longer one
// gets an error frame and the connection is closed), the number of args
// (MaxArgs), the time to send the request (RequestReadTimeout), the time a
// one-shot request may run (RequestTimeout) and the number of clients
// served at once (MaxClients; one more gets an error frame at once). The
// ss filter itself is bounded by pkg/filter (its compilation stops at the
// kernel's 64 KiB program limit).
//
// # Security
//
// The socket is mode 0660, owned by root and Config.Group: only root and
// that group can connect. The daemon reads each caller's credentials
// (SO_PEERCRED) and answers as ss would answer that caller: in the caller's
// own network namespace (all of them with all_netns, for root only), with
// process details (pid, comm, fd) only for the caller's own processes when
// the caller is not root. See Peer.
package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/sstrace/sstrace.sock"

// Limits of one request.
const (
	// MaxRequestBytes bounds the request line, newline included.
	MaxRequestBytes = 64 << 10
	// MaxArgs bounds the number of args.
	MaxArgs = 4096
	// MaxClients bounds the requests served at once.
	MaxClients = 64
	// RequestReadTimeout bounds the time a client takes to send its
	// request after connecting.
	RequestReadTimeout = 10 * time.Second
	// RequestTimeout bounds a one-shot request (all but trace and
	// history with follow).
	RequestTimeout = 2 * time.Minute
)

// Operations.
const (
	OpSS        = "ss"
	OpHistory   = "history"
	OpCloseWait = "closewait"
	OpStatus    = "status"
	OpTrace     = "trace"
	OpTop       = "top"
)

// Request is one client request.
type Request struct {
	// Op is the operation: OpSS, OpHistory, OpCloseWait, OpStatus,
	// OpTrace or OpTop.
	Op string `json:"op"`
	// Args are, for ss, its options and filter as on its command line
	// (options first, in `--name=value` form, see pkg/ssflags); for
	// history, closewait and top, the filter words (ss's filter
	// language, including state words).
	Args []string `json:"args,omitempty"`
	// Filter is the text of ss's -F FILE, read by the client: the daemon
	// never opens files on a client's behalf.
	Filter string `json:"filter,omitempty"`
	// At asks ss for the sockets as they stood at that moment (zero: now,
	// answered live from sock_diag).
	At time.Time `json:"at,omitzero"`
	// Since keeps history connections alive at or after it (zero: all
	// retained).
	Since time.Time `json:"since,omitzero"`
	// Closed keeps only closed connections (history).
	Closed bool `json:"closed,omitempty"`
	// Follow streams connections as they close (history), or sockets as
	// they change state (ss -E --transitions): a request without end.
	Follow bool `json:"follow,omitempty"`
	// JSON asks for JSON lines instead of text (history, closewait,
	// status, trace; ss takes --json among its args).
	JSON bool `json:"json,omitempty"`
	// Verbose adds each connection's timeline (history).
	Verbose bool `json:"verbose,omitempty"`
	// NoHeader leaves out the header line (history, trace).
	NoHeader bool `json:"no_header,omitempty"`
	// Extended adds each socket's cookie and namespace to trace's human
	// form.
	Extended bool `json:"extended,omitempty"`
	// PID keeps the transitions of the sockets this process owns (trace).
	PID int `json:"pid,omitempty"`
	// Width is the client's terminal width, 0 when its output is not a
	// terminal.
	Width int `json:"width,omitempty"`
	// AllNetNS answers for every network namespace instead of the
	// caller's own (root only).
	AllNetNS bool `json:"all_netns,omitempty"`
	// NetNS restricts the answer to one namespace by inode (trace,
	// history, closewait); a caller who is not root may name only its
	// own.
	NetNS uint64 `json:"netns,omitempty"`
}

// streaming reports whether the request runs until the client leaves.
func (r *Request) streaming() bool {
	return r.Op == OpTrace || r.Op == OpTop || ((r.Op == OpHistory || r.Op == OpSS) && r.Follow)
}

// ErrRequestTooLong is returned for a request line over MaxRequestBytes.
var ErrRequestTooLong = fmt.Errorf("request longer than %d bytes", MaxRequestBytes)

// DecodeRequest parses and checks one request line (with or without its
// newline). Any input gives a Request or an error, never a panic.
func DecodeRequest(line []byte) (Request, error) {
	var r Request
	if len(line) > MaxRequestBytes {
		return r, ErrRequestTooLong
	}
	line = bytes.TrimRight(line, "\r\n")
	if len(bytes.TrimSpace(line)) == 0 {
		return r, errors.New("empty request")
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("bad request: %w", err)
	}
	if dec.More() {
		return Request{}, errors.New("bad request: more than one JSON value on the line")
	}
	if err := r.check(); err != nil {
		return Request{}, err
	}
	return r, nil
}

// check validates the fields of a decoded request.
func (r *Request) check() error {
	switch r.Op {
	case OpSS, OpHistory, OpCloseWait, OpStatus, OpTrace, OpTop:
	case "":
		return errors.New("bad request: no op")
	default:
		return fmt.Errorf("bad request: unknown op %q (want ss, history, closewait, status, trace or top)", truncate(r.Op, 40))
	}
	if len(r.Args) > MaxArgs {
		return fmt.Errorf("bad request: %d args, at most %d", len(r.Args), MaxArgs)
	}
	for _, a := range r.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return errors.New("bad request: NUL byte in an argument")
		}
	}
	if r.Width < 0 || r.Width > 100000 {
		return fmt.Errorf("bad request: width %d", r.Width)
	}
	if r.Op != OpSS && !r.At.IsZero() {
		return errors.New("bad request: at is for ss only")
	}
	return nil
}

// EncodeRequest returns r as one request line, newline included.
func EncodeRequest(r Request) ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	if len(b) > MaxRequestBytes {
		return nil, ErrRequestTooLong
	}
	return b, nil
}

// Frame is one reply frame. Exactly one of Out, Err or Exit is meaningful:
// Exit is a pointer so that the final frame, even with status 0, is told
// apart from the others.
type Frame struct {
	// Out and Err are the byte counts of an output frame: that many
	// bytes follow the header line.
	Out   int    `json:"out,omitempty"`
	Err   int    `json:"err,omitempty"`
	Exit  *int   `json:"exit,omitempty"`
	Error string `json:"error,omitempty"`
}

// appendFrameHeader appends an output frame's header line for n bytes.
func appendFrameHeader(b []byte, key string, n int) []byte {
	b = append(b, `{"`...)
	b = append(b, key...)
	b = append(b, `":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, "}\n"...)
}

// MaxFrameBytes bounds the bytes of one output frame a client accepts
// (the daemon sends at most frameChunk).
const MaxFrameBytes = 1 << 20

// ReadFrame reads one frame from r: its header and, for an output frame,
// its bytes into *buf (reused). A header line longer than MaxRequestBytes
// or a count over MaxFrameBytes is an error, so a confused peer cannot make
// a client allocate without bound.
func ReadFrame(r *bufio.Reader, buf *[]byte) (Frame, error) {
	var f Frame
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return f, errors.New("frame header too long")
		}
		return f, err
	}
	if err := json.Unmarshal(line, &f); err != nil {
		return f, fmt.Errorf("frame header: %w", err)
	}
	n := f.Out + f.Err
	if f.Out < 0 || f.Err < 0 || n > MaxFrameBytes || (f.Out > 0 && f.Err > 0) {
		return f, fmt.Errorf("bad frame header %q", truncate(string(line), 80))
	}
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	*buf = (*buf)[:n]
	if _, err := io.ReadFull(r, *buf); err != nil {
		return f, fmt.Errorf("frame of %d bytes: %w", n, err)
	}
	return f, nil
}

// appendExit appends the final frame.
func appendExit(b []byte, code int, msg string) []byte {
	f := Frame{Exit: &code, Error: msg}
	j, _ := json.Marshal(f) // cannot fail: a struct of strings and an int
	return append(append(b, j...), '\n')
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ParseTime reads a moment the way the CLI takes it: RFC 3339
// ("2025-01-02T15:04:05Z", fractional seconds allowed), or a duration
// relative to now ("-30s", "-5m"; a positive duration also counts back,
// "30s" meaning 30 s ago, since the future has no answers).
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2006-01-02T15:04:05Z) or a relative duration (-30s)", s)
	}
	if d > 0 {
		d = -d
	}
	return now.Add(d), nil
}
