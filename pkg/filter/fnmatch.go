package filter

// fnmatchFold is fnmatch(pattern, name, FNM_CASEFOLD) as ss uses it for
// UNIX socket names: `*` and `?` match any characters including '/',
// `[...]` is a bracket expression (`!` or `^` negates, ranges, [:class:]),
// a backslash quotes the next character, and ASCII case is ignored.
func fnmatchFold(pattern, name string) bool {
	// Iterative matching with one backtrack point for the last '*': linear
	// enough for any pattern a user types, and no recursion to blow up.
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		if p < len(pattern) {
			switch c := pattern[p]; c {
			case '*':
				starP, starN = p, n
				p++
				continue
			case '?':
				p++
				n++
				continue
			case '[':
				if ok, next, valid := matchBracket(pattern, p, name[n]); valid {
					if ok {
						p = next
						n++
						continue
					}
				} else if fold(name[n]) == '[' {
					p++
					n++
					continue
				}
			case '\\':
				if p+1 < len(pattern) {
					if fold(pattern[p+1]) == fold(name[n]) {
						p += 2
						n++
						continue
					}
				} else if name[n] == '\\' {
					p++
					n++
					continue
				}
			default:
				if fold(c) == fold(name[n]) {
					p++
					n++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starN++
		p, n = starP+1, starN
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

func fold(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// matchBracket matches c against the bracket expression at pattern[p]
// ('['). valid is false when the expression has no closing ']', in which
// case fnmatch takes the '[' literally.
func matchBracket(pattern string, p int, c byte) (matched bool, next int, valid bool) {
	i := p + 1
	negate := false
	if i < len(pattern) && (pattern[i] == '!' || pattern[i] == '^') {
		negate = true
		i++
	}
	fc := fold(c)
	first := true
	for i < len(pattern) {
		ch := pattern[i]
		if ch == ']' && !first {
			return matched != negate, i + 1, true
		}
		first = false
		if ch == '[' && i+1 < len(pattern) && pattern[i+1] == ':' {
			if end := indexFrom(pattern, i+2, ":]"); end >= 0 {
				if classMatch(pattern[i+2:end], c) {
					matched = true
				}
				i = end + 2
				continue
			}
		}
		if ch == '\\' && i+1 < len(pattern) {
			i++
			ch = pattern[i]
		}
		lo := fold(ch)
		i++
		if i+1 < len(pattern) && pattern[i] == '-' && pattern[i+1] != ']' {
			hi := pattern[i+1]
			i += 2
			if hi == '\\' && i < len(pattern) {
				hi = pattern[i]
				i++
			}
			if (fc >= lo && fc <= fold(hi)) || (c >= ch && c <= hi) {
				matched = true
			}
			continue
		}
		if fc == lo {
			matched = true
		}
	}
	return false, 0, false
}

func indexFrom(s string, from int, sub string) int {
	for i := from; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func classMatch(class string, c byte) bool {
	switch class {
	case "alpha":
		return (c|0x20) >= 'a' && (c|0x20) <= 'z'
	case "digit":
		return c >= '0' && c <= '9'
	case "alnum":
		return classMatch("alpha", c) || classMatch("digit", c)
	case "upper", "lower":
		// Under FNM_CASEFOLD both classes take either case.
		return classMatch("alpha", c)
	case "space":
		return isCSpace(c)
	case "blank":
		return c == ' ' || c == '\t'
	case "punct":
		return c > 32 && c < 127 && !classMatch("alnum", c)
	case "print":
		return c >= 32 && c < 127
	case "graph":
		return c > 32 && c < 127
	case "cntrl":
		return c < 32 || c == 127
	case "xdigit":
		return classMatch("digit", c) || ((c|0x20) >= 'a' && (c|0x20) <= 'f')
	}
	return false
}
