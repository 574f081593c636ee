package main

import (
	"strings"
	"testing"
)

func TestParseStatus(t *testing.T) {
	st, err := parseStatus([]byte(`{"kernel":"6.1.0","btf":true,"hooks":[{"name":"tp_btf","available":true},{"name":"kprobe","available":false,"reason":"no kprobe_events"}],"chosen":"tp_btf","extra":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := hookAvailability(st, "tp_btf"); !ok || err != nil {
		t.Errorf("tp_btf: %v %v", ok, err)
	}
	if ok, reason, err := hookAvailability(st, "kprobe"); ok || reason != "no kprobe_events" || err != nil {
		t.Errorf("kprobe: %v %q %v", ok, reason, err)
	}
	// A hook the status does not list is an error, never "unavailable".
	if _, _, err := hookAvailability(st, "fentry"); err == nil || !strings.Contains(err.Error(), "not listed") {
		t.Errorf("fentry: %v", err)
	}

	for in, want := range map[string]string{
		`not json`:                  "decode",
		`{"kernel":"x","hooks":[]}`: "no \"hooks\"",
		`{"hooks":[{"hook":"tp_btf","available":true}]}`: "no \"name\"",
	} {
		if _, err := parseStatus([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseStatus(%s) = %v, want %q", in, err, want)
		}
	}
	st, _ = parseStatus([]byte(`{"hooks":[{"name":"fentry","available":false}]}`))
	if _, _, err := hookAvailability(st, "fentry"); err == nil {
		t.Error("unavailable without a reason must be an error")
	}
}
