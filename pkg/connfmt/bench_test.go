package connfmt

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
)

// retainedTable returns a seeded table holding n closed connections, each
// with the five transitions of a passive close (SYN_SENT, ESTABLISHED,
// CLOSE_WAIT, LAST_ACK, CLOSE), as the daemon retains them.
func retainedTable(n int) *table.Table {
	tbl := table.New(table.Options{RetainMax: n})
	tbl.BeginSeed()
	tbl.Seed(nil, nil)
	tbl.EndSeed()
	steps := []struct {
		old, new sock.State
		ctx      event.Context
	}{
		{sock.Close, sock.SynSent, event.ContextProcess},
		{sock.SynSent, sock.Established, event.ContextSoftirq},
		{sock.Established, sock.CloseWait, event.ContextSoftirq},
		{sock.CloseWait, sock.LastAck, event.ContextProcess},
		{sock.LastAck, sock.Close, event.ContextSoftirq},
	}
	lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	task := event.Task{PID: 4321, TID: 4321, Comm: "client"}
	wall := time.Now().UnixNano()
	mono := int64(time.Hour)
	var e event.Event
	for i := 0; i < n; i++ {
		for _, st := range steps {
			mono += 1000
			e = event.Event{
				Time: time.Unix(0, wall+mono), Mono: time.Duration(mono), Cookie: uint64(i + 1),
				CookieSource: event.CookieHelper, NetNS: 4026531840, Family: 2,
				Local: netip.AddrPortFrom(lo, uint16(20000+i%40000)), Peer: netip.AddrPortFrom(lo, 8080),
				OldState: st.old, NewState: st.new, Context: st.ctx, Hook: event.HookTPBTF,
			}
			if st.ctx == event.ContextProcess {
				e.Task = task
			}
			if st.new == sock.Close {
				e.Final = event.Final{BytesAcked: 16, BytesReceived: 1024, SRTT: 50 * time.Microsecond}
			}
			tbl.Apply(&e)
		}
	}
	return tbl
}

// BenchmarkHistory renders every retained connection, as `sstrace history
// --closed` does in the daemon (table.EachConn, then the text or JSON
// form); ns/op is per connection.
func BenchmarkHistory(b *testing.B) {
	const n = 100_000
	tbl := retainedTable(n)
	now := time.Now()
	for _, form := range []string{"text", "json"} {
		b.Run(form, func(b *testing.B) {
			var out []byte
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				err := tbl.EachConn(table.Query{Closed: true}, func(c *table.Conn) error {
					if done == b.N {
						return errStop
					}
					done++
					if form == "json" {
						var err error
						out, err = AppendHistoryJSON(out[:0], c, now)
						return err
					}
					out = AppendHistory(out[:0], c, now, false)
					return nil
				})
				if err != nil && err != errStop {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHistorySelective: a filter that keeps one connection in 10 000,
// over 100 000 retained ones; ns/op is per retained connection looked at.
func BenchmarkHistorySelective(b *testing.B) {
	const n = 100_000
	tbl := retainedTable(n)
	now := time.Now()
	match := func(c *table.Conn) bool { return c.Cookie%10_000 == 0 }
	var out []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += n {
		err := tbl.EachConn(table.Query{Closed: true, Match: match}, func(c *table.Conn) error {
			out = AppendHistory(out[:0], c, now, false)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

type stopErr struct{}

func (stopErr) Error() string { return "stop" }

var errStop error = stopErr{}
