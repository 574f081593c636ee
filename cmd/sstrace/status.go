package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/sstrace/sstrace/pkg/daemon"
	"github.com/sstrace/sstrace/pkg/tracer"
)

func newStatusCmd() *cobra.Command {
	var asJSON bool
	var socket string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show which kernel hooks work here, which would be chosen, and why the others do not",
		Long: `Show the kernel, whether it has BTF, and for every hook (tp_btf, tracepoint,
fentry, kprobe) whether it loads and attaches here, found by trying it for
real, and how events would get their socket cookies. Needs root.

With --socket PATH, report the running daemon's state instead: hook, kernel,
table size by state, events/s, lost events, re-seeds, corrections, memory,
retained connections. It exits 0 only once the daemon's table is seeded (a
script can wait on it), 1 before.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if socket != "" {
				return askDaemon(cmd.Context(), socket, daemon.Request{Op: daemon.OpStatus, JSON: asJSON})
			}
			r := tracer.Probe()
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				printStatus(r)
			}
			if r.Chosen == "" {
				msg := "no hook works on this kernel"
				if r.Problem != "" {
					msg = r.Problem
				}
				return exitError{code: 2, msg: msg}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.Flags().StringVar(&socket, "socket", "", "report the daemon listening on this socket ("+daemon.DefaultSocket+" by default)")
	return cmd
}

func printStatus(r tracer.Report) {
	fmt.Printf("kernel:  %s\n", r.Kernel)
	fmt.Printf("btf:     %v\n", r.BTF)
	if r.Problem != "" {
		fmt.Printf("problem: %s\n", r.Problem)
	}
	chosen := string(r.Chosen)
	if chosen == "" {
		chosen = "none"
	}
	fmt.Printf("chosen:  %s\n", chosen)
	fmt.Println("hooks (tried in this order):")
	for _, h := range r.Hooks {
		if h.Available {
			note := ""
			if h.CookiesNote != "" {
				note = " (" + h.CookiesNote + ")"
			}
			catcher := ""
			if h.Catcher {
				catcher = "; recursion catcher"
			}
			fmt.Printf("  %-10s available; cookies via %s%s%s\n", h.Hook, h.Cookies, note, catcher)
		} else {
			fmt.Printf("  %-10s unavailable: %s\n", h.Hook, h.Reason)
		}
	}
}
