package daemon

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/topview"
)

// firstSnapshot streams top with args until the first snapshot line.
func firstSnapshot(t *testing.T, path string, args ...string) *topview.Snapshot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := Do(ctx, path, Request{Op: OpTop, Args: args}, &out, os.Stderr)
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "\n") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("top ended with %v", err)
	}
	line, _, ok := strings.Cut(out.String(), "\n")
	if !ok {
		t.Fatalf("no snapshot within 10 s: %q", out.String())
	}
	snap, err := topview.DecodeSnapshot([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// top streams snapshots of the caller's namespace at once, narrowed by
// its filter; a bad filter is refused with the parser's message.
func TestServerTop(t *testing.T) {
	s := newSynth(t)
	path := serve(t, s.tbl)
	snap := firstSnapshot(t, path)
	if snap.States["CLOSE-WAIT"] != 3 || len(snap.CloseWait) != 2 {
		t.Errorf("states %v, close-wait %+v", snap.States, snap.CloseWait)
	}
	if len(snap.CloseWait) > 0 && (snap.CloseWait[0].Comm != "client" || snap.CloseWait[0].Sockets != 2) {
		t.Errorf("close-wait by owner: %+v, want client's 2 first", snap.CloseWait)
	}
	if len(snap.Recent) != 1 || snap.Recent[0].Outcome != "refused" || snap.Recent[0].Comm != "client" {
		t.Errorf("recent: %+v", snap.Recent)
	}
	if len(snap.Owners) != 1 || snap.Owners[0].Name != "client" || snap.Owners[0].New != 3 || snap.Owners[0].Failed != 1 {
		t.Errorf("owners: %+v", snap.Owners)
	}

	narrow := firstSnapshot(t, path, "dport", "=", ":81")
	if narrow.Live != 0 || len(narrow.CloseWait) != 0 || len(narrow.Recent) != 1 || len(narrow.Peers) != 1 || narrow.Peers[0].Name != "10.0.0.3:81" {
		t.Errorf("dport = :81: %+v", narrow)
	}

	_, _, res := ask(t, path, Request{Op: OpTop, Args: []string{"dport", "="}})
	if res.Exit != 2 || !strings.Contains(res.Error, "filter") {
		t.Errorf("bad filter: %+v", res)
	}
}
