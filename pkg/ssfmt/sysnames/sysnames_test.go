package sysnames

import (
	"github.com/sstrace/sstrace/pkg/cgroup2"
	"golang.org/x/sys/unix"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/sstrace/sstrace/pkg/ssfmt"
)

var _ ssfmt.Names = (*Resolver)(nil)

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	r := New(Options{
		Services:  write(t, dir, "services", "# comment\nhttp\t80/tcp www # WorldWideWeb\nhttp-alt 80/tcp\ndomain 53/udp\ndomain 53/tcp\nbroken 99999/tcp\nnoproto 7\n"),
		Protocols: write(t, dir, "protocols", "ip 0 IP\nicmp 1 ICMP # internet control\nicmp-dup 1\n"),
		Hosts:     write(t, dir, "hosts", "127.0.0.1 localhost\n127.0.0.1 runsc\n::1 ip6-localhost ip6-loopback\nfe80::1%lo linklocal\nbogus line\n"),
		Ifaces:    func() map[uint32]string { return map[uint32]string{1: "lo"} },
	})
	svc := []struct {
		port  uint16
		proto string
		name  string
		ok    bool
	}{{80, "tcp", "http", true}, {80, "udp", "", false}, {53, "udp", "domain", true}, {7, "tcp", "", false}}
	for _, c := range svc {
		if n, ok := r.Service(c.port, c.proto); n != c.name || ok != c.ok {
			t.Errorf("Service(%d, %s) = %q, %v; want %q, %v", c.port, c.proto, n, ok, c.name, c.ok)
		}
	}
	if n, ok := r.Protocol(1); n != "icmp" || !ok {
		t.Errorf("Protocol(1) = %q, %v", n, ok)
	}
	if _, ok := r.Protocol(255); ok {
		t.Error("Protocol(255) resolved")
	}
	hosts := map[string]string{"127.0.0.1": "localhost", "::1": "ip6-localhost", "fe80::1": "linklocal", "10.0.0.1": ""}
	for a, want := range hosts {
		if n, _ := r.Host(netip.MustParseAddr(a)); n != want {
			t.Errorf("Host(%s) = %q, want %q", a, n, want)
		}
	}
	if n, ok := r.Iface(1); n != "lo" || !ok {
		t.Errorf("Iface(1) = %q, %v", n, ok)
	}
	if _, ok := r.Cgroup(1); ok {
		t.Error("Cgroup resolved without a cgroup root")
	}
}

func TestEtcOverlay(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "services", "overlaid 80/tcp\n")
	r := New(Options{EtcOverlay: dir})
	if n, _ := r.Service(80, "tcp"); n != "overlaid" {
		t.Errorf("Service(80) = %q, want the overlay's name", n)
	}
}

func TestCgroups(t *testing.T) {
	root, err := cgroup2.Mount()
	if err != nil {
		t.Skipf("no cgroup v2 mount: %v", err)
	}
	id, err := cgroup2.ID(unix.AT_FDCWD, root)
	if err != nil {
		t.Fatalf("cgroup2.ID(%s): %v", root, err)
	}
	r := New(Options{CgroupRoot: root})
	if p, ok := r.Cgroup(id); p != "/" || !ok {
		t.Errorf("Cgroup(root id %d) = %q, %v; want \"/\"", id, p, ok)
	}
}
