package ssquery

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestCheckNetNS: -N names that ss cannot use fail with ss's words; none
// needs privileges.
func TestCheckNetNS(t *testing.T) {
	err := CheckNetNS("sstrace-no-such-netns")
	if err == nil || err.Error() != `ss: cannot open network namespace "sstrace-no-such-netns": no such file or directory` {
		t.Errorf("missing name: %v", err)
	}
	// ss opens /run/netns/ (a directory, or nothing) and fails.
	err = CheckNetNS("")
	if err == nil || !(strings.HasPrefix(err.Error(), `ss: setting the network namespace "" failed: `) ||
		strings.HasPrefix(err.Error(), `ss: cannot open network namespace "": `)) {
		t.Errorf(`-N "": %v`, err)
	}
}

// TestRunNotANetNSPrintsNothing: a -N NAME that exists and is no network
// namespace fails before the header (ss fails in setns, before printing);
// it used to print the header, then the error. With -p as well, whose
// process scan runs beside the dump.
func TestRunNotANetNSPrintsNothing(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.NewNS(t) // makes sure /run/netns exists
	name := fmt.Sprintf("sstrace-test-notns-%d", os.Getpid())
	path := filepath.Join(netns.RunDir, name)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	want := fmt.Sprintf(`ss: setting the network namespace %q failed: %s: not a namespace file`, name, path)
	for _, c := range []struct {
		what string
		o    Options
	}{{"ss -N", Options{}}, {"ss -p -N", Options{Processes: true}}, {"ss -s -N", Options{Summary: true}}, {"ss --json -N", Options{JSON: true}}} {
		c.o.NetNS = name
		var stdout, stderr bytes.Buffer
		err := Run(context.Background(), &stdout, &stderr, c.o, nil, LiveSource{NS: netns.ByName(name)})
		if err == nil || err.Error() != want {
			t.Errorf("%s: error %v, want %q", c.what, err, want)
		}
		if stdout.Len() != 0 || stderr.Len() != 0 {
			t.Errorf("%s: printed %q and %q before failing", c.what, stdout.String(), stderr.String())
		}
	}
}
