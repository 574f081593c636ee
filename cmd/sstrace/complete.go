package main

import (
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sstrace/sstrace/pkg/filter"
	"github.com/sstrace/sstrace/pkg/netns"
	"github.com/sstrace/sstrace/pkg/tracer"
)

// Shell completion of values (cobra's `sstrace completion bash|zsh|fish`
// scripts call back into the binary): hooks, namespace names, state words
// and the filter's keywords.

// completeHooks completes --hook.
func completeHooks(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	hooks := []string{"auto"}
	for _, h := range tracer.Hooks {
		hooks = append(hooks, string(h))
	}
	return hooks, cobra.ShellCompDirectiveNoFileComp
}

// completeNetnsNames completes a namespace name: those `ip netns` knows
// (/run/netns).
func completeNetnsNames(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	ents, err := os.ReadDir(netns.RunDir)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completeFilter completes the command tail in ss's language: state words
// after `state` or `exclude`, the keywords elsewhere.
func completeFilter(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	return completeFilterWords(args, false)
}

// completeConnFilter is completeFilter for history and closewait, whose
// filters also take `container`.
func completeConnFilter(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	return completeFilterWords(args, true)
}

func completeFilterWords(args []string, connections bool) ([]string, cobra.ShellCompDirective) {
	if n := len(args); n > 0 && (strings.EqualFold(args[n-1], "state") || strings.EqualFold(args[n-1], "exclude")) {
		return filter.StateWords(), cobra.ShellCompDirectiveNoFileComp
	}
	return filter.Keywords(connections), cobra.ShellCompDirectiveNoFileComp
}

// completeWords returns a completion function offering words.
func completeWords(words ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return words, cobra.ShellCompDirectiveNoFileComp
	}
}
