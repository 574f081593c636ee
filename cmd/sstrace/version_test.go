package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestVersion: `sstrace version --json` names the Go version and hashes the
// BPF objects the binary embeds (the committed files); --version is one line.
func TestVersion(t *testing.T) {
	bin := sstraceBinary(t)
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Go      string            `json:"go"`
		Objects map[string]string `json:"bpf_objects"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	sum := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:])
	}
	object := map[string]string{"amd64": "x86", "arm64": "arm64"}[runtime.GOARCH]
	if v.Objects["tracer ("+runtime.GOARCH+")"] != sum("../../pkg/tracer/tracer_"+object+"_bpfel.o") || v.Objects["procs"] != sum("../../pkg/procs/procs_bpfel.o") || !strings.HasPrefix(v.Go, "go1.") {
		t.Errorf("version: %s", out)
	}
	line, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(line), "sstrace ") || strings.Count(string(line), "\n") != 1 {
		t.Errorf("--version: %q %v", line, err)
	}
}
