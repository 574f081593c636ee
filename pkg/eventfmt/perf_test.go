package eventfmt

// Tests of the shortcuts taken for speed: each must give the same text as
// the plain formatting it replaces.

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAppendMillisMatchesFloat(t *testing.T) {
	ds := []time.Duration{1, 499, 500, 501, 999, 1000, 1499, 1500, 1501, 2500, 4500, 999_999_499, 999_999_500,
		time.Hour, 1<<50 - 1, 1 << 50, 1<<62 + 12345}
	for i := range 200000 {
		ds = append(ds, time.Duration(i)*7919+time.Duration(i%3)*500, time.Duration(uint64(i)*0x9e3779b97f4a7c15>>14))
	}
	for _, d := range ds {
		want := strconv.AppendFloat(nil, float64(d)/float64(time.Millisecond), 'f', 3, 64)
		if got := appendMillis(nil, d); string(got) != string(want) {
			t.Fatalf("%d ns: %s, want %s", int64(d), got, want)
		}
	}
}

func TestAppendJSONTaskCommApart(t *testing.T) {
	e := sample()
	e.Owner.Comm = "owner"
	e.Task.Comm = "task"
	var j JSON
	for range 2 { // the second line comes from the caches
		line := string(j.Append(nil, &e))
		if !strings.Contains(line, `"comm":"owner"`) || !strings.Contains(line, `"task_comm":"task"`) {
			t.Fatalf("comms mixed up: %s", line)
		}
	}
}

func TestAppendAllocatesNothing(t *testing.T) {
	e := sample()
	e.Owner.PID = 123456 // past strconv's small-number strings
	e.InState = 2500 * time.Microsecond
	var j JSON
	tx := NewText()
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = j.Append(buf[:0], &e) }); n != 0 {
		t.Errorf("JSON.Append: %v allocations per line", n)
	}
	if n := testing.AllocsPerRun(100, func() { buf = tx.Append(buf[:0], &e) }); n != 0 {
		t.Errorf("Text.Append: %v allocations per line", n)
	}
}
