// Package topview computes what `sstrace top` shows from the daemon's table:
// sockets by state, new connections and closes per second, the owners and
// peers that open the most connections (and whose connections fail), the
// CLOSE-WAIT sockets by owner with their age, and the latest short-lived
// connections with their outcome and lifetime.
//
// It is the model of the live view, apart from any screen: the daemon runs
// it for a client's `top` request and streams its Snapshots as JSON lines,
// and `sstrace top` without a daemon runs it on a table of its own. Work is
// done where the data is: the state counts walk the table once per refresh
// without building rows (table.CountLive), the CLOSE-WAIT panel copies
// only the connections in that state, and the per-second figures come from
// the table's update stream, counted into one-interval slots as they come.
//
// Counting from the stream rather than from the table's totals is what
// lets a filter and a namespace narrow every figure; a consumer that falls
// behind loses updates rather than slowing the table, and Snapshot.Dropped
// says how many, so an undercount is visible, never silent.
package topview

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
)

// Defaults of Options.
const (
	DefaultInterval   = time.Second
	DefaultWindow     = time.Minute
	DefaultShortLived = time.Second
	DefaultRecent     = 50
	DefaultTop        = 30
	// maxKeys bounds the distinct owners and peers one slot counts (a
	// scan of a /16 would otherwise grow a map per slot without bound);
	// the rest are counted under OtherName.
	maxKeys = 4096
	// subscriptionBuffer is the updates the table may queue for the view
	// (a second of full churn: ~300 000 events).
	subscriptionBuffer = 1 << 18
)

// OtherName is the row that sums owners or peers past maxKeys in a slot.
const OtherName = "(other)"

// Options configure an Aggregator.
type Options struct {
	// Interval is the refresh period and the width of a counting slot
	// (default DefaultInterval).
	Interval time.Duration
	// Window is how far back the top owners and peers are counted
	// (default DefaultWindow).
	Window time.Duration
	// NetNS keeps one network namespace (0: all).
	NetNS uint64
	// Match keeps the sockets it accepts (nil: all). It is shown a row
	// with the identity and the state at that moment: for a new
	// connection its first state (SYN-SENT, SYN-RECV), for a closed one
	// CLOSE, for a live one its current state. The row is reused.
	Match func(*sock.Socket) bool
	// Owner shows an owner as the viewer may see it (the daemon blanks
	// other users' processes for a caller who is not root); nil: as is.
	Owner func(event.Owner) event.Owner
	// ShortLived is the longest lifetime the latest-connections panel
	// keeps (default DefaultShortLived).
	ShortLived time.Duration
	// Recent is how many short-lived connections a snapshot carries
	// (default DefaultRecent).
	Recent int
	// Top is how many owners and peers a snapshot carries per sort key
	// (default DefaultTop).
	Top int
}

func (o *Options) defaults() {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Window < o.Interval {
		o.Window = DefaultWindow
	}
	if o.ShortLived <= 0 {
		o.ShortLived = DefaultShortLived
	}
	if o.Recent <= 0 {
		o.Recent = DefaultRecent
	}
	if o.Top <= 0 {
		o.Top = DefaultTop
	}
}

// Aggregator turns table updates into Snapshots. It is not safe for
// concurrent use: Run drives one from a single goroutine.
type Aggregator struct {
	opts  Options
	slots []slot
	// newest is the index of the newest slot counted.
	newest int64
	// recent is a ring of the latest short-lived connections.
	recent     []Recent
	recentNext int
	row        sock.Socket
}

// ownerKey names an owner: a process and its name then.
type ownerKey struct {
	pid  uint32
	comm string
}

// counts are one owner's or peer's figures in a slot.
type counts struct {
	opened, failed int
}

// slot counts what happened in one interval.
type slot struct {
	index          int64 // time / interval; 0: unused
	opened, closed int
	owners         map[ownerKey]*counts
	peers          map[netip.AddrPort]*counts
}

// New returns an empty Aggregator.
func New(opts Options) *Aggregator {
	opts.defaults()
	n := int(opts.Window/opts.Interval) + 1 // the window, plus the slot filling now
	return &Aggregator{opts: opts, slots: make([]slot, n), recent: make([]Recent, 0, opts.Recent)}
}

// slotFor returns the slot counting time at, or nil when at is older
// than the window that the newest slot so far ends.
func (a *Aggregator) slotFor(at time.Time) *slot {
	idx := at.UnixNano() / int64(a.opts.Interval)
	if idx <= a.newest-int64(len(a.slots)) {
		return nil
	}
	a.newest = max(a.newest, idx)
	s := &a.slots[idx%int64(len(a.slots))]
	switch {
	case s.index == idx:
		return s
	case s.index > idx:
		return nil // that slot already counts a newer interval
	}
	*s = slot{index: idx, owners: make(map[ownerKey]*counts), peers: make(map[netip.AddrPort]*counts)}
	return s
}

// bump returns the counts of k in m, making them unless m is full.
func bump[K comparable](m map[K]*counts, k, other K) *counts {
	if c := m[k]; c != nil {
		return c
	}
	if len(m) >= maxKeys {
		k = other
		if c := m[k]; c != nil {
			return c
		}
	}
	c := &counts{}
	m[k] = c
	return c
}

// peerKey is how a connection's peer is counted: the service (address
// and port) for a connection this host opened, the client's address (port
// 0) for one it accepted (its port is ephemeral: one row per client, not
// per connection). It is a value, not its text: events come at full
// churn, and only a snapshot's few rows need a name (peerName).
func peerKey(peer netip.AddrPort, accepted bool) netip.AddrPort {
	if accepted {
		return netip.AddrPortFrom(peer.Addr(), 0)
	}
	return peer
}

// otherPeer is the peers' OtherName key.
var otherPeer netip.AddrPort

// peerName is the row name of a peerKey.
func peerName(k netip.AddrPort) string {
	switch {
	case k == otherPeer:
		return OtherName
	case k.Port() == 0:
		return k.Addr().String()
	}
	return k.String()
}

func (a *Aggregator) owner(o event.Owner) ownerKey {
	if a.opts.Owner != nil {
		o = a.opts.Owner(o)
	}
	return ownerKey{pid: o.PID, comm: o.Comm}
}

// keep reports whether a socket in this namespace, with these addresses
// and state, passes the namespace and the filter.
func (a *Aggregator) keep(netns uint64, family uint8, local, peer netip.AddrPort, state sock.State, uid uint32, inode, cookie uint64) bool {
	if a.opts.NetNS != 0 && netns != a.opts.NetNS {
		return false
	}
	if a.opts.Match == nil {
		return true
	}
	a.row = sock.Socket{Proto: sock.ProtoTCP, Family: family, State: state, NetNS: netns,
		Local: local, Peer: peer, UID: uid, Inode: inode, Cookie: cookie}
	return a.opts.Match(&a.row)
}

// Observe counts one update of the table: an event that opens a
// connection (connect's CLOSE -> SYN_SENT, a new child's LISTEN ->
// SYN_RECV) or closes one (-> CLOSE), or a connection gone from the
// kernel (its outcome, and its lifetime for the latest-connections panel).
//
// Closes are counted from the event, when they happen: a connection that
// closed first lives on as a TIME-WAIT minisocket and reaches the stream
// as a Conn only when that expires, a minute later. Failures (refused,
// reset, ...) never leave a minisocket, so their Conn comes at once.
func (a *Aggregator) Observe(u table.Update) {
	switch {
	case u.Event != nil:
		a.observeEvent(u.Event)
	case u.Conn != nil:
		a.observeConn(u.Conn, false)
	}
}

func (a *Aggregator) observeEvent(e *event.Event) {
	accepted := e.OldState == sock.Listen && e.NewState == sock.SynRecv
	opened := accepted || e.OldState == sock.Close && e.NewState == sock.SynSent
	closed := e.NewState == sock.Close && e.OldState != sock.Listen
	if !opened && !closed {
		return
	}
	if !a.keep(e.NetNS, e.Family, e.Local, e.Peer, e.NewState, e.Owner.UID, 0, e.Cookie) {
		return
	}
	if opened {
		a.countOpen(e.Time, e.Owner, e.Peer, accepted)
	} else if s := a.slotFor(e.Time); s != nil {
		s.closed++
	}
}

func (a *Aggregator) countOpen(at time.Time, o event.Owner, peer netip.AddrPort, accepted bool) {
	s := a.slotFor(at)
	if s == nil {
		return
	}
	s.opened++
	bump(s.owners, a.owner(o), ownerKey{comm: OtherName}).opened++
	bump(s.peers, peerKey(peer, accepted), otherPeer).opened++
}

// failed reports an outcome that is a failure to count against its owner
// and peer: the connection did not end in an orderly close.
func failed(o table.Outcome) bool {
	switch o {
	case table.OutcomeRefused, table.OutcomeTimeout, table.OutcomeUnreachable, table.OutcomeReset, table.OutcomeAborted:
		return true
	}
	return false
}

// observeConn counts a closed connection: its failure, and it among the
// latest short-lived ones; countClose also counts the close itself (a
// backfill, where no event does).
func (a *Aggregator) observeConn(c *table.Conn, countClose bool) {
	if c.Origin == table.OriginListen || c.FullClosed.IsZero() {
		return // a listener is not a connection; an end not seen has no time
	}
	if !a.keep(c.NetNS, c.Family, c.Local, c.Peer, sock.Close, c.UID, c.Inode, c.Cookie) {
		return
	}
	end := c.FullClosed
	if s := a.slotFor(end); s != nil {
		if countClose {
			s.closed++
		}
		if failed(c.Outcome) {
			bump(s.owners, a.owner(c.Owner), ownerKey{comm: OtherName}).failed++
			bump(s.peers, peerKey(c.Peer, c.Origin == table.OriginAccept), otherPeer).failed++
		}
	}
	life := end.Sub(c.Opened)
	if c.Origin == table.OriginBeforeStart || c.Origin == table.OriginUnknown || life > a.opts.ShortLived {
		return // not known to be short-lived
	}
	o := a.owner(c.Owner)
	r := Recent{
		Closed: end, PID: o.pid, Comm: o.comm, Local: c.Local.String(), Peer: c.Peer.String(),
		Origin: string(c.Origin), Outcome: string(c.Outcome), By: string(c.By),
		LifetimeMs: float64(life) / float64(time.Millisecond), Gap: c.Gap,
	}
	if len(a.recent) < a.opts.Recent {
		a.recent = append(a.recent, r)
		return
	}
	a.recent[a.recentNext] = r
	a.recentNext = (a.recentNext + 1) % len(a.recent)
}

// Backfill counts the connections of the table opened or closed within
// the window before now, so that a view (or a new filter) starts with the
// last minute rather than empty: the closed ones the table retains, and
// the live ones opened since. Call it once, after subscribing and before
// the first Observe: a connection that changes in between is counted
// twice, which the window soon forgets, rather than missed. A connection
// counted here is put on its owner now, which the table keeps rather than
// the owner it opened under: an accepted connection that its server has
// closed since counts for the thread that closed it (pkg/owner's rule),
// not for the listener.
func (a *Aggregator) Backfill(tbl *table.Table, now time.Time) error {
	since := now.Add(-a.opts.Window)
	q := table.Query{Since: since, NetNS: a.opts.NetNS}
	return tbl.EachConn(q, func(c *table.Conn) error {
		if (c.Origin == table.OriginConnect || c.Origin == table.OriginAccept) && c.Opened.After(since) &&
			a.keep(c.NetNS, c.Family, c.Local, c.Peer, openState(c.Origin), c.UID, c.Inode, c.Cookie) {
			a.countOpen(c.Opened, c.Owner, c.Peer, c.Origin == table.OriginAccept)
		}
		switch {
		case !c.FullClosed.After(since):
		case c.Live():
			// Closed, living on as a minisocket: the stream brings the
			// connection when that expires; only the close counts now.
			if s := a.slotFor(c.FullClosed); s != nil && c.Origin != table.OriginListen &&
				a.keep(c.NetNS, c.Family, c.Local, c.Peer, sock.Close, c.UID, c.Inode, c.Cookie) {
				s.closed++
			}
		default:
			a.observeConn(c, true)
		}
		return nil
	})
}

// openState is the first state of a connection of this origin.
func openState(o table.Origin) sock.State {
	if o == table.OriginAccept {
		return sock.SynRecv
	}
	return sock.SynSent
}

// Snapshot computes the view at now: the state counts and the CLOSE-WAIT
// sockets from the table, the rest from what Observe counted. dropped is
// the number of updates the subscription lost.
func (a *Aggregator) Snapshot(tbl *table.Table, now time.Time, dropped uint64) (Snapshot, error) {
	snap := Snapshot{
		Time: now, IntervalMs: a.opts.Interval.Milliseconds(), WindowMs: a.opts.Window.Milliseconds(),
		Dropped: dropped, States: make(map[string]int),
	}
	byState, err := tbl.CountLive(a.opts.NetNS, a.opts.Match)
	if err != nil {
		return snap, err
	}
	for st, n := range byState {
		if n > 0 {
			snap.States[sock.State(st).SSLabel()] += n
			snap.Live += n
		}
	}
	if err := a.closeWait(tbl, now, &snap); err != nil {
		return snap, err
	}

	// The last complete slot gives the rates; the window the tops.
	cur := now.UnixNano() / int64(a.opts.Interval)
	oldest := cur - int64(len(a.slots)) + 1
	owners := make(map[ownerKey]*Count)
	peers := make(map[netip.AddrPort]*Count)
	var ownerRows, peerRows []Count
	secs := a.opts.Interval.Seconds()
	for i := range a.slots {
		s := &a.slots[i]
		if s.index < oldest || s.index > cur {
			continue
		}
		last := s.index == cur-1
		if last {
			snap.NewPerSec = float64(s.opened) / secs
			snap.ClosedPerSec = float64(s.closed) / secs
		}
		for k, c := range s.owners {
			t := owners[k]
			if t == nil {
				t = &Count{Name: k.comm, PID: k.pid}
				owners[k] = t
			}
			t.add(c, last, secs)
		}
		for k, c := range s.peers {
			t := peers[k]
			if t == nil {
				t = &Count{Name: peerName(k)}
				peers[k] = t
			}
			t.add(c, last, secs)
		}
	}
	for _, c := range owners {
		ownerRows = append(ownerRows, *c)
	}
	for _, c := range peers {
		peerRows = append(peerRows, *c)
	}
	snap.Owners = top(ownerRows, a.opts.Top)
	snap.Peers = top(peerRows, a.opts.Top)

	// Newest close first: a connection that ended in TIME-WAIT arrives
	// when its minisocket expires, after others that closed later.
	snap.Recent = slices.Clone(a.recent)
	slices.SortStableFunc(snap.Recent, func(x, y Recent) int { return y.Closed.Compare(x.Closed) })
	return snap, nil
}

func (t *Count) add(c *counts, last bool, secs float64) {
	t.New += c.opened
	t.Failed += c.failed
	if last {
		t.NewPerSec = float64(c.opened) / secs
	}
}

// top returns the n first rows by each sort key (their union), so that
// the viewer can sort by any key without asking again.
func top(all []Count, n int) []Count {
	if len(all) <= n {
		SortCounts(all, SortNew)
		return all
	}
	keep := make([]bool, len(all))
	idx := make([]int, len(all))
	for _, by := range []SortKey{SortNew, SortFailed} {
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(x, y int) int { return compareCounts(&all[x], &all[y], by) })
		for _, i := range idx[:n] {
			keep[i] = true
		}
	}
	var out []Count
	for i, k := range keep {
		if k {
			out = append(out, all[i])
		}
	}
	SortCounts(out, SortNew)
	return out
}

// closeWait groups the CLOSE-WAIT sockets by owner, with the age of each
// group's oldest (since the peer's FIN), most sockets first.
func (a *Aggregator) closeWait(tbl *table.Table, now time.Time, snap *Snapshot) error {
	groups := make(map[ownerKey]*CloseWaitGroup)
	q := table.Query{States: sock.StateSet(0).With(sock.CloseWait), NetNS: a.opts.NetNS, Live: true}
	if a.opts.Match != nil {
		q.Match = func(c *table.Conn) bool {
			return a.keep(c.NetNS, c.Family, c.Local, c.Peer, c.State, c.UID, c.Inode, c.Cookie)
		}
	}
	err := tbl.EachConn(q, func(c *table.Conn) error {
		since := c.Opened
		for i := len(c.Transitions) - 1; i >= 0; i-- {
			if c.Transitions[i].NewState == sock.CloseWait {
				since = c.Transitions[i].Time
				break
			}
		}
		k := a.owner(c.Owner)
		g := groups[k]
		if g == nil {
			g = &CloseWaitGroup{Comm: k.comm, PID: k.pid}
			groups[k] = g
		}
		g.Sockets++
		g.OldestMs = max(g.OldestMs, float64(now.Sub(since))/float64(time.Millisecond))
		if len(g.Ports) < 8 && !slices.Contains(g.Ports, c.Local.Port()) {
			g.Ports = append(g.Ports, c.Local.Port())
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, g := range groups {
		slices.Sort(g.Ports)
		snap.CloseWait = append(snap.CloseWait, *g)
	}
	slices.SortFunc(snap.CloseWait, func(x, y CloseWaitGroup) int {
		return cmp.Or(cmp.Compare(y.Sockets, x.Sockets), cmp.Compare(y.OldestMs, x.OldestMs),
			cmp.Compare(x.Comm, y.Comm), cmp.Compare(x.PID, y.PID))
	})
	return nil
}

// Run streams snapshots of tbl to emit every opts.Interval until ctx ends
// or emit fails: it subscribes to the table's events and closed
// connections, counts the last window from the table, then counts each
// update as it comes. It returns nil when ctx ends, emit's error, or the
// table's (table.ErrNotSeeded before the first seed).
func Run(ctx context.Context, tbl *table.Table, opts Options, emit func(*Snapshot) error) error {
	a := New(opts)
	sub := tbl.Subscribe(true, true, subscriptionBuffer)
	defer sub.Close()
	if err := a.Backfill(tbl, time.Now()); err != nil {
		return err
	}
	first := true
	tick := time.NewTicker(a.opts.Interval)
	defer tick.Stop()
	for {
		if first {
			// The first snapshot at once: a viewer should not stare at
			// an empty screen for an interval.
			first = false
			if err := a.emit(tbl, sub, emit); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-sub.C:
			if !ok {
				return nil
			}
			a.Observe(u)
		case <-tick.C:
			if err := a.emit(tbl, sub, emit); err != nil {
				return err
			}
		}
	}
}

func (a *Aggregator) emit(tbl *table.Table, sub *table.Subscription, emit func(*Snapshot) error) error {
	snap, err := a.Snapshot(tbl, time.Now(), sub.Dropped())
	if err != nil {
		return err
	}
	return emit(&snap)
}
