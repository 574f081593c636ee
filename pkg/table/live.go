package table

import "github.com/sstrace/sstrace/pkg/sock"

// CountLive counts the sockets the kernel has now (minisockets included;
// request sockets are never tracked) of one network namespace (0: all), by
// state, keeping those match accepts (nil: every one).
//
// It is the cheap way to a live view's state panel: no row or Conn is
// built per socket (a 100 000-socket table is walked with one reused row),
// so a refresh every second costs the event loop little. match runs under
// the table's read lock: it must be quick, as a parsed filter is, and must
// not keep the row, which holds the identity and state only and is reused.
func (t *Table) CountLive(netns uint64, match func(*sock.Socket) bool) ([sock.MaxState + 1]int, error) {
	var counts [sock.MaxState + 1]int
	t.mu.RLock()
	defer t.mu.RUnlock()
	if !t.seeded {
		return counts, ErrNotSeeded
	}
	var row sock.Socket
	for _, r := range t.live {
		if netns != 0 && r.netns != netns {
			continue
		}
		if match != nil {
			row = sock.Socket{
				Proto: sock.ProtoTCP, Family: r.family, State: r.state, NetNS: r.netns,
				Local: r.local, Peer: r.peer, UID: r.uid, Inode: r.inode, Cookie: r.cookie,
			}
			if !match(&row) {
				continue
			}
		}
		counts[r.state%(sock.MaxState+1)]++
	}
	return counts, nil
}
