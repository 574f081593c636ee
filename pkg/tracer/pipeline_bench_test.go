package tracer

// The userspace cost of one transition in `sstrace trace`, without the
// kernel: records as the kernel writes them, for loopback churn (10
// transitions a connection, in the order the churn produces them), through
// the decoder, the child holder, the owner tracker and a renderer into a
// bufio.Writer on io.Discard, as cmd/sstrace/trace.go wires them.
//
//	go test -run '^$' -bench Pipeline -benchmem ./pkg/tracer
//
// The ring buffer read and the write system calls are not in it: `make
// bench-trace` measures the whole process under real churn.

import (
	"bufio"
	"io"
	"testing"

	"github.com/sstrace/sstrace/pkg/event"
	"github.com/sstrace/sstrace/pkg/eventfmt"
	"github.com/sstrace/sstrace/pkg/owner"
	"golang.org/x/sys/unix"
)

// churnRecords returns the records of conns loopback connections.
func churnRecords(conns int) [][]byte {
	const (
		process = uint8(TracerEventContextCTX_PROCESS)
		softirq = uint8(TracerEventContextCTX_SOFTIRQ)
	)
	lo := [16]uint8{127, 0, 0, 1}
	var out [][]byte
	ts := uint64(1e12)
	cookie := uint64(1000)
	for i := range conns {
		client, child := 0xffff0000_00010000+uint64(i)*4096, 0xffff0000_80010000+uint64(i)*4096
		cport := uint16(20000 + i%40000)
		cc, sc := cookie, cookie+1
		cookie += 2
		rec := func(sk uint64, c uint64, old, new uint8, ctx uint8, sport, dport uint16) {
			ts += 3000
			k := TracerEvent{
				TsNs: ts, Cookie: c, Skaddr: sk, CgroupId: 1, Netns: 4026532000,
				Pid: 4242, Tid: 4243, Uid: 0, Saddr: lo, Daddr: lo, Sport: sport, Dport: dport,
				Family: unix.AF_INET, Oldstate: old, Newstate: new, Context: ctx,
				Hook: uint8(TracerEventHookHOOK_TP_BTF), CookieSrc: uint8(TracerCookieSourceCOOKIE_HELPER),
				Cpu: uint8(i % 2), Comm: comm("churn"),
			}
			if new == 7 { // CLOSE
				k.BytesAcked, k.BytesReceived, k.SrttUs = 16, 16, 50
			}
			out = append(out, raw(k))
		}
		rec(client, cc, 7, 2, process, cport, 7777) // CLOSE -> SYN_SENT
		rec(child, cc-1, 10, 3, softirq, 7777, 0)   // LISTEN -> SYN_RECV (listener's cookie)
		rec(child, sc, 3, 1, softirq, 7777, cport)  // SYN_RECV -> ESTABLISHED
		rec(client, cc, 2, 1, process, cport, 7777) // SYN_SENT -> ESTABLISHED
		rec(client, cc, 1, 4, process, cport, 7777) // ESTABLISHED -> FIN_WAIT1
		rec(child, sc, 1, 8, softirq, 7777, cport)  // ESTABLISHED -> CLOSE_WAIT
		rec(client, cc, 4, 5, softirq, cport, 7777) // FIN_WAIT1 -> FIN_WAIT2
		rec(child, sc, 8, 9, process, 7777, cport)  // CLOSE_WAIT -> LAST_ACK
		rec(child, sc, 9, 7, softirq, 7777, cport)  // LAST_ACK -> CLOSE
		rec(client, cc, 5, 7, softirq, cport, 7777) // FIN_WAIT2 -> CLOSE
	}
	return out
}

func benchPipeline(b *testing.B, json bool) {
	recs := churnRecords(1000)
	t := &Tracer{dec: &decoder{monoToWall: 1e18}, hold: newHolder()}
	out := bufio.NewWriterSize(io.Discard, 256<<10)
	var buf []byte
	var render func(*event.Event)
	if json {
		var j eventfmt.JSON
		render = func(e *event.Event) { buf = j.Append(out.AvailableBuffer(), e) }
	} else {
		text := eventfmt.NewText()
		render = func(e *event.Event) { buf = text.Append(out.AvailableBuffer(), e) }
	}
	owners := owner.New()
	var h Handler = HandlerFuncs{OnEvent: func(e *event.Event) error {
		owners.Observe(e)
		render(e)
		_, err := out.Write(buf)
		return err
	}}
	var ev event.Event
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r := recs[i%len(recs)]
		if !t.dec.decode(r, &ev) {
			b.Fatal("short record")
		}
		if err := t.deliver(h, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPipelineJSON is `sstrace trace --json`, per transition.
func BenchmarkPipelineJSON(b *testing.B) { benchPipeline(b, true) }

// BenchmarkPipelineText is `sstrace trace`, per transition.
func BenchmarkPipelineText(b *testing.B) { benchPipeline(b, false) }
