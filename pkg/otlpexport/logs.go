package otlpexport

import (
	"context"
	"math"
	"strings"
	"time"

	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	logsv1 "go.opentelemetry.io/proto/otlp/logs/v1"

	"github.com/sstrace/sstrace/pkg/connfmt"
	"github.com/sstrace/sstrace/pkg/table"
)

// EventName is the event name of every flow-log record.
const EventName = "sstrace.connection.closed"

// runLogs drains the queue into batches and sends them until ctx ends,
// then sends what is left (one try, within shutdownFlush).
func (e *Exporter) runLogs(ctx context.Context) {
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	var batch []*logsv1.LogRecord
	flush := func(ctx context.Context, retry bool) {
		if len(batch) > 0 {
			e.sendLogs(ctx, batch, retry)
			batch = nil // the sent records may still be referenced: a new slice
		}
	}
	for {
		select {
		case u, ok := <-e.sub.C:
			if !ok {
				flush(ctx, true)
				return
			}
			if r := e.record(u.Conn); r != nil {
				batch = append(batch, r)
			}
			if len(batch) >= batchSize {
				flush(ctx, true)
			}
		case <-tick.C:
			flush(ctx, true)
		case <-ctx.Done():
			// What is queued now goes in one last try each batch.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownFlush)
			defer cancel()
			for range cap(e.sub.C) {
				var u table.Update
				select {
				case u = <-e.sub.C:
				default:
				}
				if u.Conn == nil {
					break
				}
				if r := e.record(u.Conn); r != nil {
					batch = append(batch, r)
				}
				if len(batch) >= batchSize {
					flush(sctx, false)
				}
			}
			flush(sctx, false)
			return
		}
	}
}

// sendLogs sends one batch and counts its records as exported or dropped.
func (e *Exporter) sendLogs(ctx context.Context, batch []*logsv1.LogRecord, retry bool) {
	msg := &logsv1.LogsData{ResourceLogs: []*logsv1.ResourceLogs{{
		Resource:  e.resource,
		ScopeLogs: []*logsv1.ScopeLogs{{Scope: e.scope, LogRecords: batch}},
	}}}
	if err := e.send(ctx, e.logsURL, SignalLogs, msg, retry); err != nil {
		e.failed.Add(uint64(len(batch)))
		return
	}
	e.exported.Add(uint64(len(batch)))
}

// record is the flow-log record of a closed connection: its attributes are
// the keys and values of its `sstrace history --json` object, in that
// order and with the same types (connfmt.VisitHistory feeds both, so a key
// added there is exported too; a null is left out); the body is its
// `sstrace history` line. nil for an update that is not a connection, or
// one Options.Keep leaves out.
func (e *Exporter) record(c *table.Conn) *logsv1.LogRecord {
	if c == nil || e.opts.Keep != nil && !e.opts.Keep(c) {
		return nil
	}
	now := time.Now()
	a := attrFields{kvs: make([]*commonv1.KeyValue, 0, 32)}
	connfmt.VisitHistory(c, now, &a)
	at := c.FullClosed
	if at.IsZero() {
		at = c.Gone
	}
	return &logsv1.LogRecord{
		TimeUnixNano:         unixNano(at),
		ObservedTimeUnixNano: unixNano(now),
		SeverityNumber:       logsv1.SeverityNumber_SEVERITY_NUMBER_INFO,
		SeverityText:         "INFO",
		EventName:            EventName,
		Body:                 stringValue(strings.TrimRight(string(connfmt.AppendHistory(nil, c, now, false)), "\n ")),
		Attributes:           a.kvs,
	}
}

// attrFields builds OTLP attributes from connfmt.Fields: integers as ints
// (an unsigned one past int64 as a double, as a JSON reader would take
// it), floating point always as doubles (so a key's type never changes
// between records, also when a value is whole), times as the JSON's
// strings. A list of objects becomes an array of key-value lists.
type attrFields struct {
	kvs  []*commonv1.KeyValue
	list *listAttr // the list being filled, nil at the top level
}

// listAttr is a list under construction: its key, its elements, and the
// top-level attributes to return to.
type listAttr struct {
	key   string
	elems []*commonv1.AnyValue
	outer []*commonv1.KeyValue
}

func (a *attrFields) add(k string, v *commonv1.AnyValue) {
	a.kvs = append(a.kvs, &commonv1.KeyValue{Key: k, Value: v})
}

func (a *attrFields) Uint(k string, v uint64) {
	if v > math.MaxInt64 {
		a.Float(k, float64(v))
		return
	}
	a.Int(k, int64(v))
}
func (a *attrFields) Int(k string, v int64) {
	a.add(k, &commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: v}})
}
func (a *attrFields) Float(k string, v float64) {
	a.add(k, &commonv1.AnyValue{Value: &commonv1.AnyValue_DoubleValue{DoubleValue: v}})
}
func (a *attrFields) Bool(k string, v bool) {
	a.add(k, &commonv1.AnyValue{Value: &commonv1.AnyValue_BoolValue{BoolValue: v}})
}
func (a *attrFields) String(k, v string) { a.add(k, stringValue(v)) }
func (a *attrFields) Time(k string, t time.Time) {
	a.add(k, stringValue(t.UTC().Format(time.RFC3339Nano)))
}
func (a *attrFields) Null(string) {}
func (a *attrFields) BeginList(k string) {
	a.list = &listAttr{key: k, outer: a.kvs, elems: []*commonv1.AnyValue{}}
}
func (a *attrFields) BeginObject() { a.kvs = make([]*commonv1.KeyValue, 0, 8) }
func (a *attrFields) EndObject() {
	l := a.list
	l.elems = append(l.elems, &commonv1.AnyValue{Value: &commonv1.AnyValue_KvlistValue{KvlistValue: &commonv1.KeyValueList{Values: a.kvs}}})
}
func (a *attrFields) EndList() {
	l := a.list
	a.kvs, a.list = l.outer, nil
	a.add(l.key, &commonv1.AnyValue{Value: &commonv1.AnyValue_ArrayValue{ArrayValue: &commonv1.ArrayValue{Values: l.elems}}})
}

// stringValue wraps s.
func stringValue(s string) *commonv1.AnyValue {
	return &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: s}}
}

// stringAttributes turns a map into attributes, sorted by key.
func stringAttributes(m map[string]string) []*commonv1.KeyValue {
	kvs := make([]*commonv1.KeyValue, 0, len(m))
	for k, v := range m {
		kvs = append(kvs, &commonv1.KeyValue{Key: k, Value: stringValue(v)})
	}
	sortKeyValues(kvs)
	return kvs
}

// unixNano is t in OTLP's form (0 for the zero time).
func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}
