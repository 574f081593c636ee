package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/testutil"
)

// TestSSNetNSErrorsParity: -N arguments ss refuses, run through both
// binaries: the same exit status, nothing on stdout (sstrace printed the
// header before failing on a file that is no namespace, and took -N "" for
// the own namespace), and ss's words on stderr, lower-cased, with our reason
// after them.
func TestSSNetNSErrorsParity(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("ss"); err != nil {
		testutil.Unavailable(t, "iproute2 ss not installed: %v", err)
	}
	testutil.NewNS(t) // makes sure /run/netns exists
	notNS := fmt.Sprintf("sstrace-test-notns-%d", os.Getpid())
	path := filepath.Join(netns.RunDir, notNS)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	bin := sstraceBinary(t)
	for _, args := range [][]string{
		{"-N", notNS},
		{"-tan", "-N", notNS},
		{"-s", "-N", notNS},
		{"-tanp", "-N", notNS},
		{"-N", ""},
		{"-tan", "-N", ""},
		{"-N", "../../proc/self/ns/mnt"},
		{"-N", "sstrace-no-such-netns"},
	} {
		t.Run(fmt.Sprintf("%q", args), func(t *testing.T) {
			var ssOut, ssErr bytes.Buffer
			ss := exec.Command("ss", args...)
			ss.Stdout, ss.Stderr = &ssOut, &ssErr
			ssExit := exitCode(ss.Run())
			if ssExit == 0 {
				t.Fatalf("ss %q succeeded; the case is not an error", args)
			}
			var out, errOut bytes.Buffer
			cmd := exec.Command(bin, append([]string{"ss"}, args...)...)
			cmd.Stdout, cmd.Stderr = &out, &errOut
			if exit := exitCode(cmd.Run()); exit != ssExit {
				t.Errorf("exit %d, ss exits %d", exit, ssExit)
			}
			if out.Len() != ssOut.Len() {
				t.Errorf("stdout %q, ss prints %q", out.String(), ssOut.String())
			}
			// ss: `setting the network namespace "x" failed: Invalid
			// argument`; sstrace: `sstrace: ss: setting the network
			// namespace "x" failed: <why>`.
			ssMsg := strings.TrimSpace(ssErr.String())
			words := strings.ToLower(ssMsg[:strings.LastIndex(ssMsg, ": ")])
			msg := strings.TrimSuffix(errOut.String(), "\n")
			if !strings.HasPrefix(msg, "sstrace: ss: "+words+": ") || strings.Contains(msg, "\n") {
				t.Errorf("stderr %q, want one line starting with %q (ss: %q)", msg, "sstrace: ss: "+words+": ", ssMsg)
			}
		})
	}
}

// exitCode is a finished command's exit status (-1 when it did not run).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
