package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newSSCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ss",
		Short: "not built yet",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("ss: not built yet")
		},
	}
}
