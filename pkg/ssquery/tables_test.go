package ssquery

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sstrace/sstrace/pkg/sock"
	"github.com/sstrace/sstrace/pkg/sockdiag"
)

// TestUndecodedTables runs -d through a Source answering as kernels do: no
// module (ENOENT) is ss's empty table, another errno is ss's "RTNETLINK
// answers:" line after the legacy retry, rows are an error.
func TestUndecodedTables(t *testing.T) {
	for _, c := range []struct {
		name       string
		first, old error
		stderr     string
		wantErr    string
	}{
		{"no module", unix.ENOENT, unix.ENOENT, "", ""},
		{"old request refused", unix.ENOENT, unix.EINVAL, "RTNETLINK answers: Invalid argument\n", ""},
		{"rows", fmt.Errorf("dccp: %w", sockdiag.ErrNotDecoded), nil, "", "ss: the kernel has a sock_diag module for dccp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var asked []string
			src := sourceFunc(func(_ context.Context, req Request, _ func(*sock.Socket) error) error {
				asked = append(asked, fmt.Sprint(req.Protos, req.Families))
				if len(req.Families) == 1 && req.Families[0] == unix.AF_UNSPEC {
					return c.old
				}
				return c.first
			})
			var o Options
			o.Selection.Table(DCCP)
			var stdout, stderr bytes.Buffer
			err := Run(t.Context(), &stdout, &stderr, o, nil, src)
			if c.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if stdout.String() != "State Recv-Q Send-Q Local Address:Port Peer Address:PortProcess\n" {
				t.Errorf("stdout = %q", stdout.String())
			}
			if stderr.String() != c.stderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), c.stderr)
			}
			if len(asked) != 2 || asked[1] != "[dccp] [0]" {
				t.Errorf("requests = %q, want the inet one then the legacy one", asked)
			}
		})
	}
}
