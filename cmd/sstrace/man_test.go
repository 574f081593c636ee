package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestInstall: `make install` into a DESTDIR puts the binary, the unit,
// bash completion and a man page for sstrace and every subcommand in
// place; each page renders with man -l without a groff warning (line
// breaking aside) and documents every flag of its command. The binary it
// installs has no man command (the generator is built with -tags mangen
// only, to keep its package initialisers out of every start).
func TestInstall(t *testing.T) {
	for _, tool := range []string{"make", "man", "groff"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (make deps-test installs it)", tool, err)
		}
	}
	dest := t.TempDir()
	install := exec.Command("make", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, f := range []string{"usr/bin/sstrace", "etc/systemd/system/sstrace.service", "usr/share/bash-completion/completions/sstrace"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
	unit, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/sstrace.service"))
	if err != nil || !strings.Contains(string(unit), "ExecStart=/usr/bin/sstrace daemon") {
		t.Errorf("installed unit does not start /usr/bin/sstrace (PREFIX): %v", err)
	}
	if out, err := exec.Command(filepath.Join(dest, "usr/bin/sstrace"), "man", t.TempDir()).CombinedOutput(); err == nil || !strings.Contains(string(out), "unknown command") {
		t.Errorf("the installed binary has a man command: %v %s", err, out)
	}

	mandir := filepath.Join(dest, "usr/share/man/man8")
	var pages []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.IsAvailableCommand() && c.HasParent() {
			return
		}
		pages = append(pages, c)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root := newRootCmd()
	root.InitDefaultCompletionCmd() // cobra adds it at Execute
	walk(root)
	installed, _ := filepath.Glob(filepath.Join(mandir, "*.8"))
	if len(installed) != len(pages) {
		t.Errorf("%d man pages installed, %d commands: %v", len(installed), len(pages), installed)
	}
	for _, c := range pages {
		page := filepath.Join(mandir, strings.ReplaceAll(c.CommandPath(), " ", "-")+".8")
		var warn bytes.Buffer
		lint := exec.Command("groff", "-man", "-Tutf8", "-z", "-ww", "-Wbreak", page)
		lint.Stderr = &warn
		if err := lint.Run(); err != nil || warn.Len() > 0 {
			t.Errorf("groff %s: %v %s", page, err, warn.String())
			continue
		}
		render := exec.Command("man", "-l", page)
		render.Env = append(os.Environ(), "LC_ALL=C", "MANWIDTH=200")
		out, err := render.Output()
		if err != nil {
			t.Errorf("man -l %s: %v", page, err)
			continue
		}
		text := string(out)
		for _, section := range []string{"NAME", "SYNOPSIS", "OPTIONS"} {
			if !strings.Contains(text, "\n"+section+"\n") {
				t.Errorf("man -l %s: no %s section:\n%s", page, section, text)
			}
		}
		if !strings.Contains(text, c.Short) {
			t.Errorf("man -l %s does not say %q", page, c.Short)
		}
		c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) {
			if !f.Hidden && !strings.Contains(text, "--"+f.Name) {
				t.Errorf("man -l %s does not document --%s", page, f.Name)
			}
		})
	}
}
