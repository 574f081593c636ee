package otlpexport

import (
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/connfmt"
	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/table"
	"net/netip"
)

// benchConn is a closed loopback connection with five transitions, as
// most of a churning host's are.
func benchConn() *table.Conn {
	t0 := time.Now()
	task := &event.Task{PID: 4321, TID: 4321, Comm: "curl"}
	c := &table.Conn{
		Cookie: 123456, NetNS: 4026531840, Family: 2,
		Local: netip.MustParseAddrPort("127.0.0.1:8080"), Peer: netip.MustParseAddrPort("127.0.0.1:40000"),
		State: sock.Close, Owner: event.Owner{PID: 4321, Comm: "curl"}, Origin: table.OriginAccept,
		Opened: t0, FullClosed: t0.Add(time.Millisecond), Gone: t0.Add(time.Millisecond),
		Outcome: table.OutcomeClosed, By: table.SidePeer,
	}
	for i, s := range []sock.State{sock.SynRecv, sock.Established, sock.CloseWait, sock.LastAck, sock.Close} {
		tr := table.Transition{Time: t0.Add(time.Duration(i) * 100 * time.Microsecond), OldState: sock.Listen, NewState: s, Context: event.ContextSoftirq}
		if i >= 3 {
			tr.Context, tr.Task = event.ContextProcess, task
		}
		c.Transitions = append(c.Transitions, tr)
	}
	return c
}

// BenchmarkRecord is the exporter's cost per closed connection (history
// JSON, its attributes, the body line); BenchmarkHistoryJSON the part of
// it that is connfmt's.
func BenchmarkRecord(b *testing.B) {
	e := &Exporter{}
	c := benchConn()
	b.ReportAllocs()
	for b.Loop() {
		e.record(c)
	}
}

func BenchmarkHistoryJSON(b *testing.B) {
	c := benchConn()
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		buf, _ = connfmt.AppendHistoryJSON(buf[:0], c, time.Now())
	}
}
