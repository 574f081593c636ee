package logging

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestJournalLines: in the journal form every line starts with its
// level's syslog priority and has no time; attributes and groups added
// with With keep the prefix; the plain form is slog's own.
func TestJournalLines(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var out bytes.Buffer
		log, err := New(&out, format, "debug", true)
		if err != nil {
			t.Fatal(err)
		}
		log.Debug("d")
		log.Info("i", "k", 1)
		log.With("sub", "x").WithGroup("g").Warn("w", "k", 2)
		log.Error("e")
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		want := []string{"<7>", "<6>", "<4>", "<3>"}
		if len(lines) != len(want) {
			t.Fatalf("%s: %d lines, want %d:\n%s", format, len(lines), len(want), out.String())
		}
		for i, l := range lines {
			if !strings.HasPrefix(l, want[i]) || strings.Contains(l, "time") {
				t.Errorf("%s line %d: %q, want prefix %s and no time", format, i, l, want[i])
			}
		}
		if !strings.Contains(lines[2], "sub") || !strings.Contains(lines[2], "g.k=2") && !strings.Contains(lines[2], `"g":{"k":2}`) {
			t.Errorf("%s: attributes lost: %q", format, lines[2])
		}
	}
	var out bytes.Buffer
	log, _ := New(&out, "text", "info", false)
	log.Debug("hidden")
	log.Info("shown")
	if s := out.String(); !strings.HasPrefix(s, "time=") || strings.Contains(s, "hidden") {
		t.Errorf("plain form: %q", s)
	}
	if _, err := New(&out, "xml", "info", false); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := New(&out, "text", "loud", false); err == nil {
		t.Error("level loud accepted")
	}
}

// TestToJournal: JOURNAL_STREAM must name the file's own device and inode.
func TestToJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[string]bool{
		fmt.Sprintf("%d:%d", st.Dev, st.Ino):   true,
		fmt.Sprintf("%d:%d", st.Dev, st.Ino+1): false,
		"":                                     false,
		"x:y":                                  false,
	} {
		t.Setenv("JOURNAL_STREAM", v)
		if got := ToJournal(f); got != want {
			t.Errorf("JOURNAL_STREAM=%q: %v, want %v", v, got, want)
		}
	}
}
