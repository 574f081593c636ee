package filter

import "math"

// The ss filter language inherits C's number syntax from strtol, strtoul and
// sscanf("%i"): base prefixes ("0x" hex, a leading "0" octal), a sign, and
// leading white space. `sport = 026` is port 22 in ss, so we parse numbers
// the way libc does rather than with strconv.

// cScan reads an integer the way strtol/strtoul do with the given base
// (0 or 10). It returns the magnitude, the sign, whether the magnitude
// overflowed uint64, and how many bytes it consumed (0 when no digits).
func cScan(s string, base int) (mag uint64, neg, overflow bool, n int) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	if base == 0 {
		switch {
		case i+1 < len(s) && s[i] == '0' && (s[i+1] == 'x' || s[i+1] == 'X') &&
			i+2 < len(s) && hexVal(s[i+2]) >= 0:
			base = 16
			i += 2
		case i < len(s) && s[i] == '0':
			base = 8
		default:
			base = 10
		}
	}
	start := i
	for i < len(s) {
		d := hexVal(s[i])
		if d < 0 || d >= base {
			break
		}
		if mag > (math.MaxUint64-uint64(d))/uint64(base) {
			overflow = true
		} else {
			mag = mag*uint64(base) + uint64(d)
		}
		i++
	}
	if i == start {
		return 0, false, false, 0
	}
	return mag, neg, overflow, i
}

func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// cStrtol is C strtol on a 64-bit long: saturating, with the byte count.
func cStrtol(s string, base int) (v int64, n int, rangeErr bool) {
	mag, neg, of, n := cScan(s, base)
	if n == 0 {
		return 0, 0, false
	}
	if neg {
		if of || mag > 1<<63 {
			return math.MinInt64, n, true
		}
		return -int64(mag), n, false
	}
	if of || mag > math.MaxInt64 {
		return math.MaxInt64, n, true
	}
	return int64(mag), n, false
}

// cStrtoul is C strtoul on a 64-bit unsigned long: a minus sign negates in
// unsigned arithmetic, as libc does ("-1" is ULONG_MAX without an error).
func cStrtoul(s string, base int) (v uint64, n int, rangeErr bool) {
	mag, neg, of, n := cScan(s, base)
	if n == 0 {
		return 0, 0, false
	}
	if of {
		return math.MaxUint64, n, true
	}
	if neg {
		return -mag, n, false
	}
	return mag, n, false
}

// getInteger mirrors iproute2's get_integer(val, arg, 0): the whole word
// must be a number that fits a C int.
func getInteger(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	v, n, rerr := cStrtol(s, 0)
	if n == 0 || n != len(s) || rerr || v < math.MinInt32 || v > math.MaxInt32 {
		return 0, false
	}
	return int(v), true
}

// getUnsigned mirrors iproute2's get_unsigned(val, arg, 0): the whole word
// must be a number that fits a C unsigned int.
func getUnsigned(s string) (uint32, bool) {
	if s == "" {
		return 0, false
	}
	v, n, rerr := cStrtoul(s, 0)
	if n == 0 || n != len(s) || rerr || v > math.MaxUint32 {
		return 0, false
	}
	return uint32(v), true
}

// scanfInt mirrors one sscanf "%i" conversion into a C int: leading white
// space is skipped, trailing text is left for the rest of the format, and
// the long result is truncated to 32 bits as glibc stores it.
func scanfInt(s string) (v uint32, rest string, ok bool) {
	l, n, _ := cStrtol(s, 0)
	if n == 0 {
		return 0, s, false
	}
	return uint32(l), s[n:], true
}
