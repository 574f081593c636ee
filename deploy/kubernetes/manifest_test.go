package kubernetes

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// manifest is the file under test; unitPath the systemd unit whose
// capability set it must grant.
const (
	manifest = "sstrace-daemonset.yaml"
	unitPath = "../systemd/sstrace.service"
)

// object is what each YAML document is first read as, to pick its type.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// decode reads the manifest's documents strictly (unknown or duplicate
// fields are errors) into their API types.
func decode(t *testing.T) (ns *corev1.Namespace, sa *corev1.ServiceAccount, ds *appsv1.DaemonSet) {
	t.Helper()
	raw, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	for i, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(raw), -1) {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var into any
		switch o.APIVersion + " " + o.Kind {
		case "v1 Namespace":
			ns = &corev1.Namespace{}
			into = ns
		case "v1 ServiceAccount":
			sa = &corev1.ServiceAccount{}
			into = sa
		case "apps/v1 DaemonSet":
			ds = &appsv1.DaemonSet{}
			into = ds
		default:
			t.Fatalf("document %d: unexpected %s %s", i, o.APIVersion, o.Kind)
		}
		if err := strictDecode([]byte(doc), into); err != nil {
			t.Fatalf("document %d (%s): %v", i, o.Kind, err)
		}
	}
	if ns == nil || sa == nil || ds == nil {
		t.Fatalf("want a Namespace, a ServiceAccount and a DaemonSet; got %v %v %v", ns != nil, sa != nil, ds != nil)
	}
	return ns, sa, ds
}

// strictDecode decodes one YAML document into an API type as the API
// server does: field names are case-sensitive, and an unknown or
// duplicate field is an error. (sigs.k8s.io/yaml's UnmarshalStrict goes
// through encoding/json, which takes hostPid for hostPID.)
func strictDecode(doc []byte, into any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, into)
	return errors.Join(append(strict, err)...)
}

// TestStrictDecodingRejectsUnknownFields: the decoder the manifest test
// relies on rejects a misspelt, a miscased and a repeated field (else the
// test proves nothing).
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	for _, field := range []string{"hostPIDs: true", "hostPid: true", "hostPID: true\n      hostPID: false"} {
		var ds appsv1.DaemonSet
		err := strictDecode([]byte("apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      "+field+"\n"), &ds)
		if err == nil {
			t.Errorf("%q was accepted", field)
		}
	}
	var ds appsv1.DaemonSet
	if err := strictDecode([]byte("apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      hostPID: true\n"), &ds); err != nil || !ds.Spec.Template.Spec.HostPID {
		t.Errorf("a valid field: %v", err)
	}
}

// TestDaemonSet: the manifest decodes strictly; the pod shares the host's
// PID and network namespaces, is not privileged but has exactly the
// systemd unit's capabilities, mounts what the daemon reads (BTF, the
// cgroup v2 root, /run/netns with propagation, its socket's directory),
// has memory requests and limits and a GOMEMLIMIT below the limit,
// serves metrics on the port its scrape annotations name, and is ready
// on `sstrace status --socket` at the socket it serves. Every flag it
// passes is one `sstrace daemon --help` lists, and the probe's are
// `sstrace status --help`'s.
func TestDaemonSet(t *testing.T) {
	ns, sa, ds := decode(t)
	pod := ds.Spec.Template.Spec
	if ds.Namespace != ns.Name || sa.Namespace != ns.Name || pod.ServiceAccountName != sa.Name {
		t.Errorf("namespace %q, account %q/%q, pod's account %q", ns.Name, sa.Namespace, sa.Name, pod.ServiceAccountName)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the template's labels %v", k, v, ds.Spec.Template.Labels)
		}
	}
	if !pod.HostPID || !pod.HostNetwork {
		t.Errorf("hostPID %v, hostNetwork %v: want both", pod.HostPID, pod.HostNetwork)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || (sc.Privileged != nil && *sc.Privileged) {
		t.Fatalf("security context %+v: want capabilities, not privileged", sc)
	}
	var added []string
	for _, cp := range sc.Capabilities.Add {
		added = append(added, "CAP_"+string(cp))
	}
	if unit := unitCapabilities(t); !slices.Equal(sortedCopy(added), sortedCopy(unit)) {
		t.Errorf("capabilities %v, the systemd unit's %v", added, unit)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("drops %v, want ALL", sc.Capabilities.Drop)
	}

	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, path := range []string{"/sys/kernel/btf", "/sys/fs/cgroup", "/run/netns", "/run/sstrace"} {
		m, ok := mounts[path]
		if !ok || hostPaths[m.Name] != path {
			t.Errorf("%s: not mounted from the host's %s (mount %+v, volume %q)", path, path, m, hostPaths[m.Name])
		}
	}
	if p := mounts["/run/netns"].MountPropagation; p == nil || *p != corev1.MountPropagationHostToContainer {
		t.Errorf("/run/netns propagation %v: namespaces made after the start would not be seen", p)
	}

	limit := c.Resources.Limits.Memory()
	if c.Resources.Requests.Memory().IsZero() || limit.IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources %+v: want memory and CPU requests and a memory limit", c.Resources)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if g, ok := env["GOMEMLIMIT"]; !ok || !belowLimit(g.Value, limit.Value()) {
		t.Errorf("GOMEMLIMIT %q: want one below the memory limit %s", g.Value, limit)
	}

	bin := sstraceBinary(t)
	if len(c.Args) == 0 || c.Args[0] != "daemon" {
		t.Fatalf("args %v: want the daemon", c.Args)
	}
	flags := argFlags(t, c.Args[1:])
	checkFlags(t, bin, "daemon", flags)
	for _, v := range flags {
		for _, ref := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(v, -1) {
			if _, ok := env[ref[1]]; !ok {
				t.Errorf("args refer to $(%s), which env does not define", ref[1])
			}
		}
	}

	port := ""
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			port = itoa(p.ContainerPort)
		}
	}
	ann := ds.Spec.Template.Annotations
	if port == "" || ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != port || ann["prometheus.io/path"] != "/metrics" ||
		!strings.HasSuffix(flags["--metrics-addr"], ":"+port) {
		t.Errorf("metrics: port %q, --metrics-addr %q, annotations %v", port, flags["--metrics-addr"], ann)
	}

	probe := c.ReadinessProbe
	if probe == nil || probe.Exec == nil || len(probe.Exec.Command) < 2 || probe.Exec.Command[0] != "sstrace" || probe.Exec.Command[1] != "status" {
		t.Fatalf("readiness probe %+v: want sstrace status", probe)
	}
	probeFlags := argFlags(t, probe.Exec.Command[2:])
	checkFlags(t, bin, "status", probeFlags)
	if probeFlags["--socket"] == "" || probeFlags["--socket"] != flags["--socket"] {
		t.Errorf("probe asks %q, the daemon serves %q", probeFlags["--socket"], flags["--socket"])
	}
	if _, ok := mounts[filepath.Dir(flags["--socket"])]; !ok {
		t.Errorf("the socket's directory %s is not a volume (the root is read-only)", filepath.Dir(flags["--socket"]))
	}
}

// unitCapabilities reads the systemd unit's CapabilityBoundingSet.
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), "CapabilityBoundingSet="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("no CapabilityBoundingSet in the unit")
	return nil
}

// argFlags maps each --flag=value (or --flag value) to its value.
func argFlags(t *testing.T, args []string) map[string]string {
	t.Helper()
	flags := map[string]string{}
	for i := 0; i < len(args); i++ {
		name, value, ok := strings.Cut(args[i], "=")
		if !strings.HasPrefix(name, "--") {
			t.Errorf("argument %q is not a --flag", args[i])
			continue
		}
		if !ok && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			i++
			value = args[i]
		}
		flags[name] = value
	}
	return flags
}

// checkFlags: every flag is listed by `sstrace SUBCOMMAND --help`.
func checkFlags(t *testing.T, bin, subcommand string, flags map[string]string) {
	t.Helper()
	help, err := exec.Command(bin, subcommand, "--help").Output()
	if err != nil {
		t.Fatalf("sstrace %s --help: %v", subcommand, err)
	}
	for name := range flags {
		if !regexp.MustCompile(`(?m)^\s+(-\w, )?` + regexp.QuoteMeta(name) + `\b`).Match(help) {
			t.Errorf("sstrace %s has no flag %s:\n%s", subcommand, name, help)
		}
	}
}

// sstraceBinary builds the sstrace module's command (two directories up:
// a module of its own) into the test's directory.
func sstraceBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sstrace")
	build := exec.Command("go", "build", "-o", bin, "./cmd/sstrace")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sstrace: %v\n%s", err, out)
	}
	return bin
}

// belowLimit: a GOMEMLIMIT value (a number of bytes with B, KiB, MiB, GiB
// or TiB, as the Go runtime reads it) is below limit bytes.
func belowLimit(gomemlimit string, limit int64) bool {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(gomemlimit, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return err == nil && v > 0 && v<<u.shift < limit
		}
	}
	return false
}

func sortedCopy(s []string) []string { return slices.Sorted(slices.Values(s)) }

func itoa(n int32) string { return strconv.Itoa(int(n)) }
