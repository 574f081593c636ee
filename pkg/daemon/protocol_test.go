package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
)

func TestDecodeRequest(t *testing.T) {
	good := []struct {
		line string
		want Request
	}{
		{`{"op":"status"}`, Request{Op: OpStatus}},
		{`{"op":"status","json":true}` + "\n", Request{Op: OpStatus, JSON: true}},
		{`{"op":"history","args":["dport","=",":443"],"since":"2025-01-02T15:04:05Z","closed":true}`,
			Request{Op: OpHistory, Args: []string{"dport", "=", ":443"}, Since: time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC), Closed: true}},
		{`{"op":"ss","args":["--tcp=true","--"],"at":"2025-01-02T15:04:05.5Z","width":120}`,
			Request{Op: OpSS, Args: []string{"--tcp=true", "--"}, At: time.Date(2025, 1, 2, 15, 4, 5, 5e8, time.UTC), Width: 120}},
	}
	for _, g := range good {
		r, err := DecodeRequest([]byte(g.line))
		if err != nil {
			t.Errorf("%s: %v", g.line, err)
			continue
		}
		a, _ := json.Marshal(r)
		b, _ := json.Marshal(g.want)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: got %s, want %s", g.line, a, b)
		}
	}
	bad := []struct{ line, msg string }{
		{``, "empty"},
		{`{}`, "no op"},
		{`{"op":"rm -rf"}`, "unknown op"},
		{`{"op":"status","bogus":1}`, "unknown field"},
		{`{"op":"status"} {"op":"status"}`, "more than one"},
		{`{"op":"history","at":"2025-01-02T15:04:05Z"}`, "ss only"},
		{`{"op":"ss","width":-1}`, "width"},
		{`{"op":"ss","args":["a\u0000b"]}`, "NUL"},
		{`[1,2]`, "bad request"},
		{`{"op":"ss","args":[` + strings.Repeat(`"x",`, MaxArgs) + `"x"]}`, "args"},
		{`{"op":"status","args":"` + strings.Repeat("x", MaxRequestBytes) + `"}`, "longer"},
	}
	for _, b := range bad {
		_, err := DecodeRequest([]byte(b.line))
		if err == nil || !strings.Contains(err.Error(), b.msg) {
			t.Errorf("%.60s: error %v, want one with %q", b.line, err, b.msg)
		}
	}
}

func TestEncodeRequestRoundTrip(t *testing.T) {
	req := Request{Op: OpHistory, Args: []string{"state", "closed"}, Since: time.Unix(1700000000, 123).UTC(), Follow: true, JSON: true, AllNetNS: true}
	line, err := EncodeRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", line)
	}
	got, err := DecodeRequest(line)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Since.Equal(req.Since) || got.Op != req.Op || !got.Follow || !got.AllNetNS || len(got.Args) != 2 {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := EncodeRequest(Request{Op: OpStatus, Args: []string{strings.Repeat("x", MaxRequestBytes)}}); err == nil {
		t.Fatal("a request over the limit was encoded")
	}
}

func TestFrames(t *testing.T) {
	var b []byte
	b = appendFrame(b, "out", []byte("a\"b\\c\n\t\x01\xff é"))
	b = appendFrame(b, "err", []byte("warning\n"))
	b = appendExit(b, 3, "boom")
	r := bufio.NewReader(bytes.NewReader(b))
	var buf []byte
	var fs []Frame
	var texts []string
	for {
		f, err := ReadFrame(r, &buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
		texts = append(texts, string(buf))
	}
	// The bytes arrive exactly as written, invalid UTF-8 included.
	if len(fs) != 3 || texts[0] != "a\"b\\c\n\t\x01\xff é" || texts[1] != "warning\n" || fs[2].Exit == nil || *fs[2].Exit != 3 || fs[2].Error != "boom" {
		t.Fatalf("frames: %+v %q", fs, texts)
	}
	// A header that claims too much is refused before anything is read.
	if _, err := ReadFrame(bufio.NewReader(strings.NewReader("{\"out\":99999999}\n")), &buf); err == nil {
		t.Fatal("oversized frame accepted")
	}
	// The final frame of a success still carries exit 0.
	if !bytes.Contains(appendExit(nil, 0, ""), []byte(`"exit":0`)) {
		t.Fatal("exit 0 omitted")
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"-30s":                 now.Add(-30 * time.Second),
		"30s":                  now.Add(-30 * time.Second),
		"5m":                   now.Add(-5 * time.Minute),
		"2025-01-02T15:00:00Z": time.Date(2025, 1, 2, 15, 0, 0, 0, time.UTC),
	} {
		got, err := ParseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%s: %v %v, want %v", in, got, err, want)
		}
	}
	if _, err := ParseTime("yesterday", now); err == nil {
		t.Error("yesterday parsed")
	}
}

// FuzzDecodeRequest: any line decodes to a valid request or an error,
// never a panic, and a valid request survives a round trip.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"op":"status"}`,
		`{"op":"ss","args":["--tcp=true","--all=true","--","dport","=",":22"],"at":"2025-01-02T15:04:05Z"}`,
		`{"op":"history","args":["state","closed"],"since":"2025-01-02T15:04:05Z","follow":true,"json":true,"verbose":true}`,
		`{"op":"closewait","all_netns":true,"netns":4026531840}`,
		`{"op":"trace","json":true,"no_header":true,"width":80}`,
		`{"op":"ss","filter":"dport = :22\n# c\n"}`,
		`{"op":`, `null`, `{"op":"status"}garbage`, "\xff\xfe", `{"op":"ss","args":[1]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := DecodeRequest(line)
		if err != nil {
			if r.Op != "" {
				t.Fatalf("error %v with a request %+v", err, r)
			}
			// The error reaches the client as a frame.
			var fr Frame
			if json.Unmarshal(bytes.TrimSpace(appendExit(nil, 1, err.Error())), &fr) != nil || fr.Exit == nil {
				t.Fatalf("error frame does not decode: %v", err)
			}
			return
		}
		line2, err := EncodeRequest(r)
		if err != nil {
			if err == ErrRequestTooLong {
				return // escaping can grow a line past the limit
			}
			t.Fatalf("valid request does not encode: %v", err)
		}
		if _, err := DecodeRequest(line2); err != nil {
			t.Fatalf("re-encoded request does not decode: %v\n%s", err, line2)
		}
	})
}

// appendFrame appends one output frame, header and bytes, as the server's
// replyWriter sends it (header and bytes in one writev).
func appendFrame(b []byte, key string, text []byte) []byte {
	return append(appendFrameHeader(b, key, len(text)), text...)
}
