package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestCompletion: the shell completion scripts call `sstrace __complete`,
// which offers the hooks, the state words after `state`, the filter's
// keywords, and the namespace names of /run/netns.
func TestCompletion(t *testing.T) {
	ns := testutil.NewNS(t)
	bin := sstraceBinary(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"trace", "--hook", ""}, "tp_btf"},
		{[]string{"daemon", "--log-format", ""}, "json"},
		{[]string{"ss", "-t", "state", ""}, "close-wait"},
		{[]string{"trace", "state", ""}, "time-wait"},
		{[]string{"history", ""}, "dport"},
		{[]string{"closewait", ""}, "container"},
		{[]string{"ss", "-N", ""}, ns.Name},
		{[]string{"trace", "--netns", ""}, ns.Name},
	} {
		out, err := exec.Command(bin, append([]string{"__complete"}, tc.args...)...).Output()
		if err != nil {
			t.Fatalf("__complete %q: %v", tc.args, err)
		}
		found := false
		for _, l := range strings.Split(string(out), "\n") {
			found = found || l == tc.want
		}
		if !found {
			t.Errorf("__complete %q: no %q in\n%s", tc.args, tc.want, out)
		}
	}
}
