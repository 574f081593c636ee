package filter

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// TestMatchTransition: ports and addresses select the socket; state words
// keep the transitions into or out of the named states.
func TestMatchTransition(t *testing.T) {
	ev := func(local, peer string, old, new sock.State) *event.Event {
		return &event.Event{Family: unix.AF_INET, Local: netip.MustParseAddrPort(local),
			Peer: netip.MustParseAddrPort(peer), OldState: old, NewState: new}
	}
	toCW := ev("10.0.0.1:5432", "10.0.0.9:40000", sock.Established, sock.CloseWait)
	fromCW := ev("10.0.0.1:5432", "10.0.0.9:40000", sock.CloseWait, sock.LastAck)
	other := ev("10.0.0.1:80", "10.0.0.9:40001", sock.Close, sock.SynSent)
	for _, tc := range []struct {
		args []string
		want [3]bool // toCW, fromCW, other
	}{
		{nil, [3]bool{true, true, true}},
		{[]string{"sport = :5432 or dport = :5432"}, [3]bool{true, true, false}},
		{[]string{"state", "close-wait"}, [3]bool{true, true, false}},
		{[]string{"state", "last-ack"}, [3]bool{false, true, false}},
		{[]string{"state", "syn-sent", "dport", "=", ":40001"}, [3]bool{false, false, true}},
		{[]string{"src", "10.0.0.1", "and", "sport", "!=", ":5432"}, [3]bool{false, false, true}},
	} {
		q, err := Parse(tc.args, ParseOptions{DefaultStates: sock.AllStates})
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		got := [3]bool{q.MatchTransition(toCW), q.MatchTransition(fromCW), q.MatchTransition(other)}
		if got != tc.want {
			t.Errorf("%q: %v, want %v", tc.args, got, tc.want)
		}
	}
}
