package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/sstrace/sstrace/pkg/procs"
	"github.com/sstrace/sstrace/pkg/tracer"
	"github.com/sstrace/sstrace/pkg/version"
)

// buildInfo is this binary's version, with its BPF objects' hashes.
func buildInfo() version.Info {
	return version.Read(map[string]string{
		"tracer (" + runtime.GOARCH + ")": tracer.ObjectSHA256(),
		"procs":                           procs.ObjectSHA256(),
	})
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print sstrace's version, VCS revision, Go version and BPF object hashes",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			inf := buildInfo()
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(inf)
			}
			_, err := fmt.Print(inf.String())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object")
	return cmd
}
