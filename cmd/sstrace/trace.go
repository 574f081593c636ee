package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newTraceCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "trace",
		Short: "not built yet",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("trace: not built yet")
		},
	}
}
