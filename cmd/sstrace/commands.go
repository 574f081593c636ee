package main

import "github.com/spf13/cobra"

// subcommands lists every subcommand; each is built in its own file.
func subcommands() []*cobra.Command {
	return []*cobra.Command{
		newTraceCmd(),
		newSSCmd(),
		newStatusCmd(),
		newHistoryCmd(),
		newCloseWaitCmd(),
		newDaemonCmd(),
		newTopCmd(),
		newVersionCmd(),
	}
}
