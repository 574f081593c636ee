package filter

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// word is one filter word and where it came from, for error messages.
type word struct {
	text string
	pos  int // 1-based over the whole command tail
	line int // line in a filter file, 0 for command-line words
}

// splitWords cuts one command-line argument or file line into words the way
// ss's get_token_from_line does: only spaces and tabs separate words (so
// `(` and `)` must stand alone), and a backslash makes the next character
// literal. ss works on C strings, so a NUL ends the text.
func splitWords(s string) []string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	var out []string
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) {
			return out
		}
		var b strings.Builder
		for i < len(s) && s[i] != ' ' && s[i] != '\t' {
			if s[i] == '\\' {
				i++
				if i >= len(s) {
					break
				}
			}
			b.WriteByte(s[i])
			i++
		}
		out = append(out, b.String())
	}
}

// maxFilterLine is ss's line buffer (1024 bytes, fgets): a line that does
// not fit, newline included, is an error in ss, and in sstrace too.
const maxFilterLine = 1024

// readFileWords reads an `ss -F` filter file: lines whose first character
// is '#' are comments, and so, as ss 6.1 has it, are lines starting with
// '0' (ss meant to skip empty lines but compares with the character '0').
func readFileWords(r io.Reader, firstPos int) ([]word, error) {
	br := bufio.NewReader(r)
	var out []word
	pos := firstPos
	for line := 1; ; line++ {
		text, err := br.ReadString('\n')
		if text == "" && err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("filter: read filter file: %w", err)
		}
		// fgets reads at most 1023 bytes; ss then refuses anything that
		// filled the buffer.
		if i := strings.IndexByte(text, 0); i >= 0 {
			text = text[:i]
			if i == 0 {
				return nil, fmt.Errorf("filter: invalid line %d in filter file: it starts with a NUL byte", line)
			}
		}
		if len(text) >= maxFilterLine-1 {
			return nil, fmt.Errorf("filter: line %d of filter file is too long: %d bytes with its newline, ss takes at most %d", line, len(text), maxFilterLine-2)
		}
		text = strings.TrimSuffix(text, "\n")
		if strings.HasPrefix(text, "#") || strings.HasPrefix(text, "0") {
			continue
		}
		for _, w := range splitWords(text) {
			out = append(out, word{text: w, pos: pos, line: line})
			pos++
		}
	}
}
