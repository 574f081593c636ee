package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseKernelsConf(t *testing.T) {
	// The committed list must parse.
	f, err := os.Open("../kernels.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	specs, err := parseKernelsConf(f)
	if err != nil || len(specs) < 3 {
		t.Fatalf("kernels.conf: %v %v", specs, err)
	}
	// The same series may be listed once per architecture; amd64 is the
	// default and keeps its bare series as ID.
	specs, err = parseKernelsConf(strings.NewReader("6.1 bookworm\n6.1 bookworm arm64\n"))
	if err != nil || len(specs) != 2 || specs[0].ID() != "6.1" || specs[1].ID() != "6.1-arm64" || specs[0].Arch != "amd64" {
		t.Errorf("two architectures: %+v %v", specs, err)
	}
	for _, tc := range []struct{ in, err string }{
		{"6.1 bookworm arm64 extra", "want \"SERIES SUITE [ARCH]\""},
		{"6.1 bookworm extra", `architecture "extra" is not one of amd64, arm64`},
		{"6.1 bookworm\n6.1 trixie amd64", "series 6.1 listed twice for amd64"},
		{"6 bookworm", "not MAJOR.MINOR"},
		{"6.1 Bookworm!", "not a Debian suite"},
		{"6.1 bookworm\n6.1 trixie", "listed twice"},
		{"# nothing\n\n", "no kernels"},
	} {
		if _, err := parseKernelsConf(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
		}
	}
}

// The apt outputs below are as apt 2.6 printed them for bullseye.
func TestResolveFromAptOutput(t *testing.T) {
	lead, err := parseMetaDepends([]byte("linux-image-cloud-amd64\n  Depends: linux-image-5.10.0-46-cloud-amd64\n"), "amd64")
	if err != nil || lead != "linux-image-5.10.0-46-cloud-amd64-unsigned" {
		t.Fatalf("lead = %q, %v", lead, err)
	}
	if _, err := parseMetaDepends([]byte("linux-image-cloud-amd64\n  Depends: linux-base\n"), "amd64"); err == nil {
		t.Error("no kernel dependency must be an error")
	}
	// As apt 2.6 printed it for bookworm's arm64 lists.
	lead64, err := parseMetaDepends([]byte("linux-image-cloud-arm64\n  Depends: linux-image-6.1.0-56-cloud-arm64\n"), "arm64")
	if err != nil || lead64 != "linux-image-6.1.0-56-cloud-arm64-unsigned" {
		t.Errorf("arm64 lead = %q, %v", lead64, err)
	}
	if _, err := parseMetaDepends([]byte("linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n"), "arm64"); err == nil {
		t.Error("an amd64 kernel must not be taken for arm64")
	}
	cands, err := parseMadison([]byte(strings.Join([]string{
		"linux-image-5.10.0-43-cloud-amd64-unsigned | 5.10.251-5 | http://deb.debian.org/debian-security bullseye-security/main amd64 Packages",
		"linux-image-5.10.0-46-cloud-amd64-unsigned | 5.10.262-1 | http://deb.debian.org/debian-security bullseye-security/main amd64 Packages",
		"linux-image-5.10.0-32-cloud-amd64-unsigned | 5.10.223-1 | http://deb.debian.org/debian bullseye/main amd64 Packages",
		"linux-image-5.10.0-32-cloud-amd64-unsigned | 5.10.223-1 | http://deb.debian.org/debian bullseye/main amd64 Packages",
		"linux-image-6.1.0-0.deb11.1-cloud-amd64-unsigned | 6.1.4-1~bpo11+1 | http://deb.debian.org/debian bullseye/main amd64 Packages",
	}, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 4 {
		t.Fatalf("duplicates must collapse: %v", cands)
	}
	ordered, err := orderCandidates(cands, lead, "5.10")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range ordered {
		got = append(got, c.version)
	}
	if want := []string{"5.10.262-1", "5.10.251-5", "5.10.223-1"}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v (newest first, other series dropped)", got, want)
	}
	if _, err := orderCandidates(cands, "linux-image-9.9-cloud-amd64-unsigned", "5.10"); err == nil {
		t.Error("a lead package without versions must be an error")
	}
}

func TestParseKconfig(t *testing.T) {
	cfg, err := parseKconfig(strings.NewReader("#\n# CONFIG_X is not set\nCONFIG_BPF=y\nCONFIG_VETH=m\nCONFIG_LOCALVERSION=\"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg["CONFIG_BPF"] != "y" || cfg["CONFIG_VETH"] != "m" || cfg["CONFIG_X"] != "" {
		t.Errorf("cfg = %v", cfg)
	}
	if _, err := parseKconfig(strings.NewReader("not a config\n")); err == nil {
		t.Error("no CONFIG_ lines must be an error")
	}
}

// Real kernel modules are ELF objects whose .modinfo holds depends=; clang
// builds such objects, which keeps the test independent of a download.
func TestModuleLoadOrder(t *testing.T) {
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("clang not installed")
	}
	dir := t.TempDir()
	mod := func(rel, depends string) {
		t.Helper()
		src := filepath.Join(t.TempDir(), "m.c")
		c := `__attribute__((section(".modinfo"), used)) static const char info[] = "license=GPL\0depends=` + depends + `\0vermagic=x";` + "\n"
		must(t, os.WriteFile(src, []byte(c), 0o644))
		out := filepath.Join(dir, rel)
		must(t, os.MkdirAll(filepath.Dir(out), 0o755))
		if b, err := exec.Command("clang", "-c", "-o", out, src).CombinedOutput(); err != nil {
			t.Fatalf("clang: %v\n%s", err, b)
		}
	}
	mod("kernel/net/ipv4/inet_diag.ko", "")
	mod("kernel/net/ipv4/tcp_diag.ko", "inet_diag")
	mod("kernel/net/ipv4/udp_diag.ko", "inet_diag")
	mod("kernel/drivers/net/veth.ko", "")
	mod("kernel/net/loop-a.ko", "loop_b")
	mod("kernel/net/loop_b.ko", "loop_a")
	mod("kernel/net/needs-missing.ko", "nowhere")

	order, err := moduleLoadOrder(dir, []string{"tcp_diag", "udp_diag", "veth"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := moduleNames(order), []string{"inet_diag", "tcp_diag", "udp_diag", "veth"}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
	if _, err := moduleLoadOrder(dir, []string{"loop_a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: %v", err)
	}
	if _, err := moduleLoadOrder(dir, []string{"needs_missing"}); err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Errorf("missing dependency: %v", err)
	}

	// Debian 13 ships modules as .ko.xz.
	if _, err := exec.LookPath("xz"); err == nil {
		if b, err := exec.Command("xz", filepath.Join(dir, "kernel/net/ipv4/inet_diag.ko")).CombinedOutput(); err != nil {
			t.Fatalf("xz: %v %s", err, b)
		}
		order, err := moduleLoadOrder(dir, []string{"tcp_diag"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(order[0], "inet_diag.ko.xz") {
			t.Errorf("order %v: want the .ko.xz dependency first", order)
		}
	}
}
