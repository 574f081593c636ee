package filter

import (
	"bufio"
	"bytes"
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

// lexer hands the parser one word at a time, as ss's yylex does: the
// arguments' words, then the filter file's, read a line at a time. Nothing
// but the tree being built grows with the filter's size, and a bad file
// line is reported when the parser gets to it, as in ss (a syntax error
// before it wins).
type lexer struct {
	args []string      // arguments not yet split
	rest string        // the unsplit rest of the current argument or line
	file *bufio.Reader // nil without a filter file
	line int           // the file line rest comes from, 0 for arguments
	pos  int           // position of the next word
	err  error         // the file's error, once met; the words end there
	last word          // the last word handed out, for errors at the end
}

// next returns the next word; ok is false at the end of the words or at
// a file error (then err is set).
func (l *lexer) next() (w word, ok bool) {
	for {
		if text, rest, found := cutWord(l.rest); found {
			l.rest = rest
			w = word{text: text, pos: l.pos, line: l.line}
			l.pos++
			l.last = w
			return w, true
		}
		switch {
		case len(l.args) > 0:
			l.rest = cutNUL(l.args[0])
			l.args = l.args[1:]
		case l.file != nil && l.err == nil:
			text, err := l.readLine()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					l.err = err
				}
				l.file = nil
				return word{}, false
			}
			l.rest = text
		default:
			return word{}, false
		}
	}
}

// cutNUL ends a string at its first NUL: ss works on C strings.
func cutNUL(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return s[:i]
	}
	return s
}

// cutWord takes the first word off s the way ss's get_token_from_line
// does: only spaces and tabs separate words (so `(` and `)` must stand
// alone), and a backslash makes the next character literal.
func cutWord(s string) (w, rest string, ok bool) {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	if i >= len(s) {
		return "", "", false
	}
	start, escaped := i, false
	for i < len(s) && s[i] != ' ' && s[i] != '\t' {
		if s[i] == '\\' {
			escaped = true
			i++
		}
		i++
	}
	i = min(i, len(s))
	if !escaped {
		return s[start:i], s[i:], true
	}
	var b strings.Builder
	for j := start; j < i; j++ {
		if s[j] == '\\' {
			j++
			if j >= i {
				break
			}
		}
		b.WriteByte(s[j])
	}
	return b.String(), s[i:], true
}

// splitWords cuts one command-line argument or file line into words (see
// cutWord).
func splitWords(s string) []string {
	var out []string
	s = cutNUL(s)
	for {
		w, rest, ok := cutWord(s)
		if !ok {
			return out
		}
		out = append(out, w)
		s = rest
	}
}

// maxFilterLine is ss's line buffer (1024 bytes, fgets): a line that does
// not fit, newline included, is an error in ss, and in sstrace too.
const maxFilterLine = 1024

// readLine returns the next line of an `ss -F` filter file that is not a
// comment, without its newline, or io.EOF. Lines whose first character is
// '#' are comments, and so, as ss 6.1 has it, are lines starting with '0'
// (ss meant to skip empty lines but compares with the character '0').
// A line too long for ss is only counted, never held whole.
func (l *lexer) readLine() (string, error) {
	for {
		chunk, err := l.file.ReadSlice('\n')
		if len(chunk) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return "", io.EOF
			}
			return "", fmt.Errorf("filter: read filter file: %w", err)
		}
		l.line++
		// fgets reads at most 1023 bytes; ss then refuses anything that
		// filled the buffer. It sees the line up to its first NUL.
		// chunk is bufio's buffer, overwritten by the next read: keep a
		// copy of as much as ss would use.
		text, total, nul := string(chunk[:min(len(chunk), maxFilterLine)]), 0, -1
		for {
			if nul < 0 {
				if i := bytes.IndexByte(chunk, 0); i >= 0 {
					nul = total + i
				}
			}
			total += len(chunk)
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
			chunk, err = l.file.ReadSlice('\n')
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("filter: read filter file: %w", err)
		}
		n := total
		if nul >= 0 {
			n = nul
		}
		if nul == 0 {
			return "", fmt.Errorf("filter: invalid line %d in filter file: it starts with a NUL byte", l.line)
		}
		if n >= maxFilterLine-1 {
			return "", fmt.Errorf("filter: line %d of filter file is too long: %d bytes with its newline, ss takes at most %d", l.line, n, maxFilterLine-2)
		}
		line := strings.TrimSuffix(text[:n], "\n")
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, "0") {
			continue
		}
		return line, nil
	}
}
