package eventfmt

// Tests of what the writers promise for speed.

import (
	"testing"
	"time"
)

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
