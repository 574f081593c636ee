package main

import "strings"

// compareDebVersions orders Debian versions ([epoch:]upstream[-revision])
// as dpkg does: <0 when a is older than b, 0 when equal, >0 when newer.
// It is needed to pick the newest kernel among several package names,
// which apt only orders within one name.
func compareDebVersions(a, b string) int {
	ae, au, ar := splitDebVersion(a)
	be, bu, br := splitDebVersion(b)
	if c := compareNumeric(ae, be); c != 0 {
		return c
	}
	if c := compareDebPart(au, bu); c != 0 {
		return c
	}
	return compareDebPart(ar, br)
}

func splitDebVersion(v string) (epoch, upstream, revision string) {
	epoch = "0"
	if i := strings.IndexByte(v, ':'); i >= 0 {
		epoch, v = v[:i], v[i+1:]
	}
	upstream = v
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		upstream, revision = v[:i], v[i+1:]
	}
	return epoch, upstream, revision
}

// compareDebPart alternates between non-digit runs (compared with the dpkg
// character order, where '~' sorts before everything, even the end) and
// digit runs (compared as numbers).
func compareDebPart(a, b string) int {
	for a != "" || b != "" {
		var an, bn string
		an, a = span(a, false)
		bn, b = span(b, false)
		if c := compareLexical(an, bn); c != 0 {
			return c
		}
		an, a = span(a, true)
		bn, b = span(b, true)
		if c := compareNumeric(an, bn); c != 0 {
			return c
		}
	}
	return 0
}

func span(s string, digits bool) (run, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) == digits {
		i++
	}
	return s[:i], s[i:]
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func compareLexical(a, b string) int {
	for i := 0; i < len(a) || i < len(b); i++ {
		var ca, cb int
		if i < len(a) {
			ca = debOrder(a[i])
		}
		if i < len(b) {
			cb = debOrder(b[i])
		}
		if ca != cb {
			return ca - cb
		}
	}
	return 0
}

// debOrder is dpkg's character weight: '~' lowest, then the end of the
// string (0), then letters, then everything else.
func debOrder(c byte) int {
	switch {
	case c == '~':
		return -1
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		return int(c)
	default:
		return int(c) + 256
	}
}

func compareNumeric(a, b string) int {
	a = strings.TrimLeft(a, "0")
	b = strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}
