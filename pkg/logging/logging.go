// Package logging builds the daemon's log/slog logger: text or JSON lines
// on stderr. When stderr is systemd's journal stream (the unit's default),
// each line starts with its syslog priority (<3> for errors ... <7> for
// debug), which journald strips and keeps, so `journalctl -p warning -u
// sstrace` finds the warnings; and the line carries no time of its own,
// since journald stamps every line already.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// New returns a logger writing to w in format ("text" or "json") at level
// ("debug", "info", "warn" or "error"). journal selects the journal form
// (see the package doc); ToJournal tells whether w is the journal.
func New(w io.Writer, format, level string, journal bool) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var pw *priorityWriter
	if journal {
		pw = &priorityWriter{out: w}
		w = pw
		opts.ReplaceAttr = dropTime
	}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	if journal {
		h = &journalHandler{inner: h, w: pw}
	}
	return slog.New(h), nil
}

// ToJournal reports whether f is the stream systemd connected to the
// journal: $JOURNAL_STREAM names its device and inode ("DEV:INO"), as
// sd_journal_stream_fd documents. A stream redirected elsewhere by the
// service keeps the variable but not the inode, so both are compared.
func ToJournal(f *os.File) bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == d && st.Ino == i
}

// dropTime leaves out the record's time: journald has it.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// journalHandler sets the priority of the record it passes on; the
// handlers of package slog write each record with one Write, which the
// priorityWriter prefixes.
type journalHandler struct {
	inner slog.Handler
	w     *priorityWriter
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.prefix = priority(r.Level)
	return h.inner.Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), w: h.w}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), w: h.w}
}

// priorityWriter writes each line after the prefix its handler set, under
// the lock the handler holds.
type priorityWriter struct {
	mu     sync.Mutex
	out    io.Writer
	prefix string
	buf    []byte
}

func (w *priorityWriter) Write(b []byte) (int, error) {
	w.buf = append(append(w.buf[:0], w.prefix...), b...)
	if _, err := w.out.Write(w.buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

// priority is the syslog prefix of a level (sd-daemon(3)).
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}
