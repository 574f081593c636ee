package otlpexport

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"

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
// the keys and values of its `sstrace history --json` object, taken from
// that JSON (connfmt.AppendHistoryJSON) so that a key added there is
// exported too; the body is its `sstrace history` line. nil for an update
// that is not a connection, or one Options.Keep leaves out.
func (e *Exporter) record(c *table.Conn) *logsv1.LogRecord {
	if c == nil || e.opts.Keep != nil && !e.opts.Keep(c) {
		return nil
	}
	now := time.Now()
	j, err := connfmt.AppendHistoryJSON(nil, c, now)
	if err != nil {
		return nil
	}
	attrs, err := jsonAttributes(j)
	if err != nil {
		// AppendHistoryJSON writes valid JSON (its tests compare it with
		// encoding/json's); say so rather than lose the record silently.
		attrs = []*commonv1.KeyValue{{Key: "sstrace.error", Value: stringValue(err.Error())}}
	}
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
		Attributes:           attrs,
	}
}

// floatKeys are the keys of table.ConnJSON (and the types it holds) whose
// values are floating point: always exported as doubles, also when a value
// happens to be a whole number and the JSON shows it without a fraction
// (a lifetime_ms of exactly 3 ms is "3"), so that a key's type never
// changes from one record to the next. Every other number is an integer.
// Worked out on first use, not at init: every sstrace command would pay.
var floatKeys = sync.OnceValue(func() map[string]bool {
	return jsonFloatKeys(reflect.TypeFor[table.ConnJSON](), map[string]bool{})
})

// jsonFloatKeys collects the JSON names of float fields in t and the
// structs it holds.
func jsonFloatKeys(t reflect.Type, keys map[string]bool) map[string]bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return keys
	}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		switch k := f.Type.Kind(); {
		case k == reflect.Float32 || k == reflect.Float64:
			keys[name] = true
		case f.IsExported() || f.Anonymous:
			jsonFloatKeys(f.Type, keys)
		}
	}
	return keys
}

// jsonAttributes turns one JSON object into OTLP attributes, keys in the
// object's order: strings, integers, doubles and booleans as such, arrays
// and objects as array and key-value-list values, nulls left out. gjson
// reads it in place: encoding/json's token stream took 65 µs and 860
// allocations a connection, a core's worth at 15 000 closes a second.
func jsonAttributes(b []byte) ([]*commonv1.KeyValue, error) {
	if !gjson.ValidBytes(b) {
		return nil, fmt.Errorf("otlp: history JSON is not valid: %.60q", b)
	}
	v := gjson.ParseBytes(b)
	if !v.IsObject() {
		return nil, fmt.Errorf("otlp: history JSON is not an object: %.60q", b)
	}
	return jsonObject(v, 32), nil
}

// jsonObject is an object's members as attributes (room made for n).
func jsonObject(v gjson.Result, n int) []*commonv1.KeyValue {
	kvs := make([]*commonv1.KeyValue, 0, n)
	v.ForEach(func(k, v gjson.Result) bool {
		if a := jsonValue(v, k.Str); a != nil {
			kvs = append(kvs, &commonv1.KeyValue{Key: k.Str, Value: a})
		}
		return true
	})
	return kvs
}

// jsonValue is one JSON value as an attribute value; key is the key it is
// under (for floatKeys). nil for a null.
func jsonValue(v gjson.Result, key string) *commonv1.AnyValue {
	switch v.Type {
	case gjson.String:
		return stringValue(v.Str)
	case gjson.True, gjson.False:
		return &commonv1.AnyValue{Value: &commonv1.AnyValue_BoolValue{BoolValue: v.Type == gjson.True}}
	case gjson.Number:
		if !floatKeys()[key] {
			if i, err := strconv.ParseInt(v.Raw, 10, 64); err == nil {
				return &commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: i}}
			}
		}
		return &commonv1.AnyValue{Value: &commonv1.AnyValue_DoubleValue{DoubleValue: v.Num}}
	case gjson.JSON:
		if v.IsObject() {
			return &commonv1.AnyValue{Value: &commonv1.AnyValue_KvlistValue{KvlistValue: &commonv1.KeyValueList{Values: jsonObject(v, 8)}}}
		}
		vs := make([]*commonv1.AnyValue, 0, 8)
		v.ForEach(func(_, e gjson.Result) bool {
			if a := jsonValue(e, key); a != nil {
				vs = append(vs, a)
			}
			return true
		})
		return &commonv1.AnyValue{Value: &commonv1.AnyValue_ArrayValue{ArrayValue: &commonv1.ArrayValue{Values: vs}}}
	}
	return nil // null
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
