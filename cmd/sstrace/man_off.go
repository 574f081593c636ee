//go:build !mangen

package main

import "github.com/spf13/cobra"

// extraCommands: none in the binary users run (see man.go for the man-page
// generator that `make man` builds with -tags mangen).
func extraCommands() []*cobra.Command { return nil }
