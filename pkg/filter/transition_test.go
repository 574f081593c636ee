package filter

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
)

// TestMatchTransition: ports and addresses select the socket; state words
// keep the transitions into or out of the named states; `cgroup PATH`
// (trace --cgroup) the sockets whose owner is in that cgroup.
func TestMatchTransition(t *testing.T) {
	ev := func(local, peer string, old, new sock.State) *event.Event {
		return &event.Event{Family: unix.AF_INET, Local: netip.MustParseAddrPort(local),
			Peer: netip.MustParseAddrPort(peer), OldState: old, NewState: new}
	}
	toCW := ev("10.0.0.1:5432", "10.0.0.9:40000", sock.Established, sock.CloseWait)
	fromCW := ev("10.0.0.1:5432", "10.0.0.9:40000", sock.CloseWait, sock.LastAck)
	other := ev("10.0.0.1:80", "10.0.0.9:40001", sock.Close, sock.SynSent)
	toCW.Owner.CgroupID, fromCW.Owner.CgroupID, other.Owner.CgroupID = 42, 42, 43
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
		// The owner's cgroup (toCW's and fromCW's owner is in 42).
		{WithCgroup(nil, "/svc"), [3]bool{true, true, false}},
		{WithCgroup([]string{"state", "last-ack"}, "/svc"), [3]bool{false, true, false}},
		{WithCgroup([]string{"sport", "=", ":80"}, "/svc"), [3]bool{false, false, false}},
	} {
		q, err := Parse(tc.args, ParseOptions{DefaultStates: sock.AllStates, LookupCgroup: func(p string) (uint64, error) {
			return map[string]uint64{"/svc": 42}[p], nil
		}})
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		got := [3]bool{q.MatchTransition(toCW), q.MatchTransition(fromCW), q.MatchTransition(other)}
		if got != tc.want {
			t.Errorf("%q: %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestMatchConn: the daemon's connections match `cgroup PATH` on their
// owner's cgroup, by path (a cgroup that no longer exists included) or by
// id while it exists, and `container ID` on a prefix of the owner's
// container id; ss's words mean what they mean in ss, and ss's own parse
// knows no `container`.
func TestMatchConn(t *testing.T) {
	const id = "4f2a9c0e1b3d5f7a9c0e1b3d5f7a9c0e1b3d5f7a9c0e1b3d5f7a9c0e1b3d5f7a"
	s := tcp(sock.Established, "127.0.0.1:40108", "127.0.0.1:22")
	inDocker := Owner{CgroupID: 77, Cgroup: "/system.slice/docker-" + id + ".scope", Container: id}
	unnamed := Owner{CgroupID: 4242} // /test's id, its path never found
	host := Owner{CgroupID: 1, Cgroup: "/"}
	opts := testOpts()
	opts.DefaultStates = sock.AllStates
	opts.Connections = true
	for _, c := range []struct {
		filter string
		want   [3]bool // inDocker, unnamed, host
	}{
		{"container 4f2a9c0e1b3d", [3]bool{true, false, false}},
		{"container = 4F2A9C", [3]bool{true, false, false}},
		{"container " + id, [3]bool{true, false, false}},
		{"container != 4f2a", [3]bool{false, true, true}},
		{"container 4f2b", [3]bool{false, false, false}},
		{"cgroup /system.slice/docker-" + id + ".scope", [3]bool{true, false, false}},
		{"cgroup system.slice/docker-" + id + ".scope/", [3]bool{true, false, false}},
		{"cgroup /test", [3]bool{false, true, false}}, // by id: it exists
		{"cgroup /", [3]bool{false, false, true}},
		{"cgroup /gone.scope", [3]bool{false, false, false}},
		{"sport = :40108 and container 4f2a", [3]bool{true, false, false}},
		{"dport = :22 or container 4f2a", [3]bool{true, true, true}},
	} {
		q, err := Parse([]string{c.filter}, opts)
		if err != nil {
			t.Fatalf("%q: %v", c.filter, err)
		}
		got := [3]bool{q.MatchConn(s, inDocker), q.MatchConn(s, unnamed), q.MatchConn(s, host)}
		if got != c.want {
			t.Errorf("%q: %v, want %v", c.filter, got, c.want)
		}
		// The tree prints back to a filter that parses to the same tree.
		again, err := Parse([]string{q.Expr.String()}, opts)
		if err != nil || treeString(again.Expr) != treeString(q.Expr) {
			t.Errorf("%q printed as %q: %v", c.filter, q.Expr.String(), err)
		}
	}
	for _, bad := range []struct{ filter, msg string }{
		{"container xyz", `filter: bad container "xyz" at word 2: expected a container id or its first digits`},
		{"container", "filter: unexpected end of filter at word 2: expected a container id or its first digits after container [=|!=]"},
		{"container " + id + "0", `filter: bad container`},
		{"dport = :22 or", "filter: unexpected end of filter at word 5: expected a condition (src, dst, sport, dport, dev, fwmark, cgroup, container, autobound)"},
	} {
		if _, err := Parse([]string{bad.filter}, opts); err == nil || !strings.HasPrefix(err.Error(), bad.msg) {
			t.Errorf("%q: %v, want %q", bad.filter, err, bad.msg)
		}
	}
	// ss has no `container`: without Connections it is a word like any
	// other, and a syntax error where a condition belongs, as in ss.
	if _, err := Parse([]string{"container 4f2a"}, testOpts()); err == nil || !strings.Contains(err.Error(), `unexpected "container" at word 1`) {
		t.Errorf("ss's parse of container: %v", err)
	}
	if q, err := Parse([]string{"dev", "container"}, testOpts()); err == nil {
		t.Errorf("dev container: parsed as %s", q.Expr)
	}
}

// TestPorts: the ports trace filters in the kernel are a superset of what
// the expression keeps, or none.
func TestPorts(t *testing.T) {
	for _, tc := range []struct {
		filter string
		want   []uint16 // nil: nothing to push down
	}{
		{"", nil},
		{"sport = :5432", []uint16{5432}},
		{"dport = :5432 or sport = :5432", []uint16{5432}},
		{"dport = :443 or dport = :80", []uint16{80, 443}},
		{"dst 10.0.0.1:443", []uint16{443}},
		{"( sport = :80 or sport = :81 ) and dport = :9000", []uint16{9000}},
		{"sport = :80 and dst 10.0.0.0/8", []uint16{80}},
		{"sport = :80 or dst 10.0.0.0/8", nil},
		{"dport != :22", nil},
		{"sport >= :1024", nil},
		{"dst 10.0.0.1", nil},
		{"state established", nil},
		{"state established sport = :80", []uint16{80}},
	} {
		q, err := Parse(strings.Fields(tc.filter), ParseOptions{DefaultStates: sock.AllStates})
		if err != nil {
			t.Fatalf("%q: %v", tc.filter, err)
		}
		got, ok := q.Ports(16)
		if ok != (tc.want != nil) || !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v %v, want %v", tc.filter, got, ok, tc.want)
		}
	}
	q, _ := Parse(strings.Fields("sport = :1 or sport = :2 or sport = :3"), ParseOptions{DefaultStates: sock.AllStates})
	if ports, ok := q.Ports(2); ok {
		t.Errorf("3 ports with max 2: %v", ports)
	}
}
