// Command sstrace is an eBPF TCP connection tracer with an ss-compatible
// view of the host's sockets.
//
//	sstrace trace            live TCP state transitions (needs root)
//	sstrace ss -tan          ss, answered straight from sock_diag
//	sstrace status           which kernel hooks work here, and why not
//
// Each subcommand lives in a file of its own and is wired in here.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sstrace/sstrace/pkg/version"
)

func main() {
	// No signal handling here: one-shot commands die on Ctrl-C like any
	// tool, and installing the handler costs a goroutine and a thread at
	// every start (measurable on `sstrace ss -s`). trace installs its own.
	root := newRootCmd()
	if err := root.ExecuteContext(context.Background()); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, "sstrace:", ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "sstrace:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "sstrace",
		Short:         "eBPF TCP connection tracer with an ss-compatible socket table",
		SilenceUsage:  true,
		SilenceErrors: true,
		// --version: the line is read only when asked for (reading the
		// build info at every start cost start-up time); `sstrace
		// version` says more.
		Version: "-",
	}
	cobra.AddTemplateFunc("sstraceVersion", func() string { return version.Read(nil).Short() })
	root.SetVersionTemplate("{{sstraceVersion}}\n")
	root.AddCommand(subcommands()...)
	return root
}

// exitError carries a specific exit status (and optionally a message) up to
// main, so that subcommands return errors instead of calling os.Exit.
type exitError struct {
	code int
	msg  string
}

// Error returns the message main prints.
func (e exitError) Error() string { return e.msg }
