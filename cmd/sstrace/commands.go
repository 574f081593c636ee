package main

import "github.com/spf13/cobra"

// subcommands lists every subcommand; each is built in its own file.
// extraCommands are those of a build tag's (man.go).
func subcommands() []*cobra.Command {
	return append([]*cobra.Command{
		newTraceCmd(),
		newSSCmd(),
		newStatusCmd(),
		newHistoryCmd(),
		newCloseWaitCmd(),
		newDaemonCmd(),
		newTopCmd(),
		newVersionCmd(),
	}, extraCommands()...)
}
