package otlpexport

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
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
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownFlush)
			defer cancel()
			for {
				select {
				case u := <-e.sub.C:
					if r := e.record(u.Conn); r != nil {
						batch = append(batch, r)
					}
					if len(batch) >= batchSize {
						flush(sctx, false)
					}
					continue
				default:
				}
				break
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
// that is not a connection.
func (e *Exporter) record(c *table.Conn) *logsv1.LogRecord {
	if c == nil {
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
var floatKeys = jsonFloatKeys(reflect.TypeFor[table.ConnJSON](), map[string]bool{})

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
// and objects as array and key-value-list values, nulls left out.
func jsonAttributes(b []byte) ([]*commonv1.KeyValue, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := jsonValue(dec, "")
	if err != nil {
		return nil, err
	}
	kv, ok := v.GetValue().(*commonv1.AnyValue_KvlistValue)
	if !ok {
		return nil, fmt.Errorf("otlp: want a JSON object, got %.40q", b)
	}
	return kv.KvlistValue.Values, nil
}

// jsonValue reads the next JSON value; key is the key it is under (for
// floatKeys). nil for a null.
func jsonValue(dec *json.Decoder, key string) (*commonv1.AnyValue, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("otlp: history JSON: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			var kvs []*commonv1.KeyValue
			for dec.More() {
				ktok, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("otlp: history JSON: %w", err)
				}
				k, _ := ktok.(string)
				v, err := jsonValue(dec, k)
				if err != nil {
					return nil, err
				}
				if v != nil {
					kvs = append(kvs, &commonv1.KeyValue{Key: k, Value: v})
				}
			}
			_, err := dec.Token() // }
			return &commonv1.AnyValue{Value: &commonv1.AnyValue_KvlistValue{KvlistValue: &commonv1.KeyValueList{Values: kvs}}}, err
		}
		vs := []*commonv1.AnyValue{}
		for dec.More() {
			v, err := jsonValue(dec, key)
			if err != nil {
				return nil, err
			}
			if v != nil {
				vs = append(vs, v)
			}
		}
		_, err := dec.Token() // ]
		return &commonv1.AnyValue{Value: &commonv1.AnyValue_ArrayValue{ArrayValue: &commonv1.ArrayValue{Values: vs}}}, err
	case string:
		return stringValue(t), nil
	case json.Number:
		if !floatKeys[key] {
			if i, err := t.Int64(); err == nil {
				return &commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: i}}, nil
			}
		}
		f, err := t.Float64()
		if err != nil {
			return nil, fmt.Errorf("otlp: history JSON: %s: %w", key, err)
		}
		return &commonv1.AnyValue{Value: &commonv1.AnyValue_DoubleValue{DoubleValue: f}}, nil
	case bool:
		return &commonv1.AnyValue{Value: &commonv1.AnyValue_BoolValue{BoolValue: t}}, nil
	}
	return nil, nil // null
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
