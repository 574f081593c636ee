package connfmt

import (
	"strconv"
	"time"

	"github.com/sstrace/sstrace/pkg/eventfmt"
	"github.com/sstrace/sstrace/pkg/table"
)

// Fields receives the fields of a connection's history entry, the keys of
// table.ConnJSON in its order, each with its type: AppendHistoryJSON
// writes them as JSON, and the OTLP exporter turns them into attributes
// without a round trip through JSON. A list of objects (the transitions)
// comes as BeginList, then BeginObject, fields, EndObject per element,
// then EndList.
type Fields interface {
	Uint(key string, v uint64)
	Int(key string, v int64)
	Float(key string, v float64)
	Bool(key string, v bool)
	String(key, v string)
	// Time is a moment: JSON writes it as encoding/json writes a
	// time.Time (RFC 3339 with nanoseconds, UTC here).
	Time(key string, t time.Time)
	// Null is a key without a value (an open connection's "closed").
	Null(key string)
	BeginList(key string)
	BeginObject()
	EndObject()
	EndList()
}

// VisitHistory hands f the fields of c's history entry; now is used for an
// open connection's lifetime.
func VisitHistory(c *table.Conn, now time.Time, f Fields) {
	j := c.JSON(now)
	f.Uint("cookie", j.Cookie)
	f.Uint("netns", j.NetNS)
	f.String("family", j.Family)
	f.String("saddr", j.Saddr)
	f.Uint("sport", uint64(j.Sport))
	f.String("daddr", j.Daddr)
	f.Uint("dport", uint64(j.Dport))
	f.String("state", j.State)
	if j.Minisocket {
		f.Bool("minisocket", true)
	}
	f.Uint("pid", uint64(j.PID))
	f.String("comm", j.Comm)
	f.Uint("uid", uint64(j.UID))
	if j.CgroupID != 0 {
		f.Uint("cgroup_id", j.CgroupID)
	}
	if j.Cgroup != "" {
		f.String("cgroup", j.Cgroup)
	}
	if j.Container != "" {
		f.String("container", j.Container)
	}
	f.String("origin", j.Origin)
	f.Time("opened", j.Opened)
	if j.Closed != nil {
		f.Time("closed", *j.Closed)
	} else {
		f.Null("closed")
	}
	f.Float("lifetime_ms", j.LifetimeMs)
	f.String("outcome", j.Outcome)
	if j.By != "" {
		f.String("by", j.By)
	}
	f.Uint("bytes_sent", j.BytesSent)
	f.Uint("bytes_received", j.BytesReceived)
	f.Uint("retrans", uint64(j.Retrans))
	f.Int("rtt_us", j.RTTus)
	f.Bool("gap", j.Gap)
	f.BeginList("transitions")
	for _, t := range j.Transitions {
		f.BeginObject()
		f.Time("time", t.Time)
		f.String("oldstate", t.OldState.String())
		f.String("newstate", t.NewState.String())
		f.String("context", t.Context.String())
		if t.Task != nil {
			if t.Task.PID != 0 {
				f.Uint("pid", uint64(t.Task.PID))
			}
			if t.Task.Comm != "" {
				f.String("comm", t.Task.Comm)
			}
		}
		f.EndObject()
	}
	f.EndList()
}

// jsonFields writes Fields as the members of a JSON object. The keys are
// ours (plain identifiers): only values are escaped.
type jsonFields struct {
	b     []byte
	first bool // no member written yet at this level: no comma
}

func (w *jsonFields) key(k string) {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *jsonFields) Uint(k string, v uint64) { w.key(k); w.b = strconv.AppendUint(w.b, v, 10) }
func (w *jsonFields) Int(k string, v int64)   { w.key(k); w.b = strconv.AppendInt(w.b, v, 10) }
func (w *jsonFields) Float(k string, v float64) {
	w.key(k)
	w.b = appendJSONFloat(w.b, v)
}
func (w *jsonFields) Bool(k string, v bool) { w.key(k); w.b = strconv.AppendBool(w.b, v) }
func (w *jsonFields) String(k, v string) {
	w.key(k)
	w.b = eventfmt.AppendJSONString(w.b, v)
}
func (w *jsonFields) Time(k string, t time.Time) {
	w.key(k)
	w.b = append(w.b, '"')
	w.b = t.UTC().AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
}
func (w *jsonFields) Null(k string)      { w.key(k); w.b = append(w.b, "null"...) }
func (w *jsonFields) BeginList(k string) { w.key(k); w.b = append(w.b, '['); w.first = true }
func (w *jsonFields) BeginObject() {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.b = append(w.b, '{')
	w.first = true
}
func (w *jsonFields) EndObject() { w.b = append(w.b, '}'); w.first = false }
func (w *jsonFields) EndList()   { w.b = append(w.b, ']'); w.first = false }
