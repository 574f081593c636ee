package ssquery

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sstrace/sstrace/pkg/filter"
	"github.com/sstrace/sstrace/pkg/sock"
)

// parseQuery parses the command tail (state words and filter expression)
// and the -F file the way ss does: the expression is the arguments' words
// followed by the file's. Names in the filter resolve in the listed
// namespace: interfaces and the local port range are the namespace's.
func parseQuery(args []string, file string, stdin io.Reader, sel *Selection, env *netnsEnv) (*filter.Query, error) {
	opts := filter.ParseOptions{
		DefaultStates: sel.states,
		Family:        uint8(sel.preferred),
		LookupIface: func(name string) (uint32, error) {
			ifaces, err := env.interfaces()
			if err != nil {
				return 0, err
			}
			for idx, n := range ifaces {
				if n == name {
					return idx, nil
				}
			}
			return 0, fmt.Errorf("no interface %q in the namespace", name)
		},
		LocalPortRange: func() (int, int, error) {
			r := env.portRange()
			if r.Min == 0 && r.Max == 0 {
				return 0, 0, fmt.Errorf("local port range unknown")
			}
			return int(r.Min), int(r.Max), nil
		},
	}
	if file == "" {
		return filter.Parse(args, opts)
	}
	// ss reads standard input for any -F argument starting with "-".
	if strings.HasPrefix(file, "-") {
		if stdin == nil {
			stdin = os.Stdin
		}
		return filter.ParseReader(args, stdin, opts)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("open filter file: %w", err)
	}
	defer f.Close()
	return filter.ParseReader(args, f, opts)
}

// parseStates parses only the state words at the head of args (what ss has
// read when it runs -D, before the filter), with sel's default states.
func parseStates(args []string, sel *Selection) (sock.StateSet, error) {
	n := 0
	for n < len(args) && (args[n] == "state" || args[n] == "exclude" || args[n] == "excl") {
		n += 2
	}
	q, err := filter.Parse(args[:min(n, len(args))], filter.ParseOptions{DefaultStates: sel.states})
	if err != nil {
		return 0, err
	}
	return q.States, nil
}
