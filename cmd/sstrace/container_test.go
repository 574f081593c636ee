package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/cgroup2"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// containerfile is the image definition shipped in deploy/.
const containerfile = "../../deploy/container/Containerfile"

// TestContainerImage builds the image from the release binaries with
// buildah, offline (FROM scratch), for both architectures, and checks what
// is in it: the entrypoint, one file (the release binary, byte for byte)
// and a size that is the binary's. Then it runs the daemon in it with
// podman as the README says (host PID and network namespaces, only the
// unit's capabilities, read-only root, no new privileges, the host's BTF,
// cgroup v2 root and /run/netns mounted) and checks that it seeds, that
// `sstrace status` inside and the host's client through the mounted socket
// both answer, that the daemon names this test's process as the owner of a
// CLOSE-WAIT leak (the host's PIDs), and that `sstrace ss -tan` inside the
// container shows this test's sockets as the host's ss does.
//
// Storage is the test's own (vfs, under a temporary directory): nothing is
// pulled, nothing is left in /var/lib/containers.
func TestContainerImage(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"buildah", "podman", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, "%s: %v (make deps-test installs it)", tool, err)
		}
	}
	dist := releaseBuild(t)
	dir := t.TempDir()
	store := []string{"--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs"}
	tool := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, append(append([]string{}, store...), args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
		}
		return strings.TrimSpace(string(out))
	}

	for arch := range releaseArches {
		image := "localhost/sstrace-test:" + arch
		tool("buildah", "bud", "--quiet", "--platform", "linux/"+arch, "-f", containerfile, "-t", image, dist)
		var inspect struct {
			OCIv1 struct {
				Architecture string
				Config       struct{ Entrypoint, Cmd, Env []string }
				RootFS       struct {
					DiffIDs []string `json:"diff_ids"`
				} `json:"rootfs"`
			}
		}
		if err := json.Unmarshal([]byte(tool("buildah", "inspect", "--type", "image", image)), &inspect); err != nil {
			t.Fatal(err)
		}
		c := inspect.OCIv1
		if c.Architecture != arch || strings.Join(c.Config.Entrypoint, " ") != "/usr/local/bin/sstrace" ||
			len(c.Config.Cmd) == 0 || c.Config.Cmd[0] != "daemon" || len(c.RootFS.DiffIDs) != 1 {
			t.Errorf("image %s: %+v", image, c)
		}
		// Its files: the binary, nothing else.
		ctr := tool("buildah", "from", "--pull-never", image)
		root := tool("buildah", "mount", ctr)
		var files []string
		var size int64
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(root, path)
				files = append(files, rel)
				if info, err := d.Info(); err == nil {
					size += info.Size()
				}
			}
			return nil
		})
		if strings.Join(files, " ") != "usr/local/bin/sstrace" || fileSHA(t, filepath.Join(root, files[0])) != fileSHA(t, filepath.Join(dist, "sstrace-linux-"+arch)) {
			t.Errorf("image %s holds %v, want only usr/local/bin/sstrace = dist/sstrace-linux-%s", image, files, arch)
		}
		t.Logf("image %s: %d files, %.1f MB", image, len(files), float64(size)/1e6)
		tool("buildah", "rm", ctr)
	}

	// Run the daemon in the image of this machine's architecture.
	cg, err := cgroup2.Mount()
	if err != nil {
		testutil.Unavailable(t, "cgroup v2: %v", err)
	}
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		t.Fatal(err)
	}
	sockDir := filepath.Join(dir, "sock")
	if err := os.Mkdir(sockDir, 0o750); err != nil {
		t.Fatal(err)
	}
	run := append([]string{
		// runc rather than crun: crun refuses hosts with controllers on a
		// hybrid cgroup hierarchy (as this project's machine has).
		"--runtime", "runc", "--cgroup-manager", "cgroupfs",
		"run", "-d", "--name", "sstrace-test",
		"--pid", "host", "--network", "host",
		// The systemd unit's bounding set (TestSystemdUnit proves it
		// is enough), not --privileged.
		"--cap-drop", "all", "--cap-add", strings.Join(unitCapNames(t), ","),
		"--security-opt", "no-new-privileges", "--read-only",
		"-v", "/sys/kernel/btf:/sys/kernel/btf:ro",
		"-v", cg + ":/sys/fs/cgroup:ro",
		"-v", "/run/netns:/run/netns:rslave",
		"-v", sockDir + ":/run/sstrace",
	}, hostRlimits()...)
	run = append(run, "localhost/sstrace-test:"+runtime.GOARCH)
	tool("podman", run...)
	t.Cleanup(func() {
		out, err := exec.Command("podman", append(store, "rm", "-f", "-t", "5", "sstrace-test")...).CombinedOutput()
		if err != nil {
			t.Errorf("podman rm: %v %s", err, out)
		}
	})
	inside := func(args ...string) (string, error) {
		out, err := exec.Command("podman", append(append(store, "exec", "sstrace-test", "sstrace"), args...)...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := inside("status", "--socket", "/run/sstrace/sstrace.sock")
		if err == nil {
			t.Logf("sstrace status in the container:\n%s", out)
			break
		}
		if time.Now().After(deadline) {
			logs, _ := exec.Command("podman", append(store, "logs", "sstrace-test")...).CombinedOutput()
			t.Fatalf("the daemon in the container did not seed within 20 s: %v %s\nlogs:\n%s", err, out, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A listener, a connection and a CLOSE-WAIT leak of this process, in
	// the host's namespace the container shares.
	ln, err := testutil.ListenTCP4()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, leak, err := dialAccept(net.Dialer{}, ln)
	if err != nil {
		t.Fatal(err)
	}
	defer leak.Close()
	client.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	filter := []string{"-tan", "sport = :" + port + " or dport = :" + port}
	var want, got string
	for range 20 { // until the FIN has arrived (CLOSE-WAIT) and both agree
		want = runReal(t, filter)
		if got, err = inside(append([]string{"ss"}, filter...)...); err != nil {
			t.Fatalf("sstrace ss in the container: %v %s", err, got)
		}
		if strings.Contains(want, "CLOSE-WAIT") && strings.Join(sortedLines(want), "\n") == strings.Join(sortedLines(got), "\n") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if w, g := sortedLines(want), sortedLines(got); len(w) < 3 || strings.Join(w, "\n") != strings.Join(g, "\n") {
		t.Errorf("ss %s:\nhost ss:\n%s\nsstrace ss in the container:\n%s", strings.Join(filter, " "), want, got)
	}

	// The host's client, through the socket's mounted directory: the
	// daemon sees the host's PIDs (this test's own).
	host := &daemonRun{bin: sstraceBinary(t), sock: filepath.Join(sockDir, "sstrace.sock")}
	var cw string
	for range 20 {
		cw = host.run(t, "closewait", "--socket", host.sock, "--all-netns")
		if strings.Contains(cw, "(pid "+strconv.Itoa(os.Getpid())+")") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(cw, "(pid "+strconv.Itoa(os.Getpid())+")") || !strings.Contains(cw, ":"+port) {
		t.Errorf("closewait from the host through the container's socket does not name this process (pid %d) on port %s:\n%s", os.Getpid(), port, cw)
	}
}

// hostRlimits are podman --ulimit flags that keep this process's limits:
// podman otherwise raises the open files and processes limits, which
// fails where the runtime lacks CAP_SYS_RESOURCE (a container host), and
// it lowers its own process limit to 32768 first (seen with strace).
func hostRlimits() []string {
	var flags []string
	for _, l := range []struct {
		name     string
		resource int
		cap      uint64
	}{{"nofile", unix.RLIMIT_NOFILE, 1 << 20}, {"nproc", unix.RLIMIT_NPROC, 32768}} {
		var r unix.Rlimit
		if unix.Getrlimit(l.resource, &r) != nil {
			continue
		}
		v := strconv.FormatUint(min(r.Max, l.cap), 10)
		flags = append(flags, "--ulimit", l.name+"="+v+":"+v)
	}
	return flags
}

// fileSHA is a file's SHA-256, for comparing two files.
func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
