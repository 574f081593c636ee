package ssfmt

import (
	"net/netip"
	"strconv"
	"strings"
)

// CFormatG formats v as C's printf("%.*g", prec, v): prec significant
// digits, trailing zeros dropped, exponent form outside 1e-4 <= |v| < 10^prec.
// ss prints its TCP internals with %g, whose output differs from Go's %g.
func CFormatG(v float64, prec int) string {
	if prec == 0 {
		prec = 1
	}
	e := strconv.FormatFloat(v, 'e', prec-1, 64)
	i := strings.LastIndexByte(e, 'e')
	x, err := strconv.Atoi(e[i+1:])
	if err != nil { // NaN or Inf: C prints "nan"/"inf", never reached by ss's inputs
		return strings.ToLower(e)
	}
	if x < prec && x >= -4 {
		return trimZeros(strconv.FormatFloat(v, 'f', prec-1-x, 64))
	}
	return trimZeros(e[:i]) + e[i:]
}

func trimZeros(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// cG is C's plain %g.
func cG(v float64) string { return CFormatG(v, 6) }

// NtoP6 formats an IPv6 address as glibc's inet_ntop does. It differs from
// netip.Addr.String for IPv4-compatible addresses (::a.b.c.d), which glibc
// prints with a dotted quad.
func NtoP6(a [16]byte) string { return string(appendNtoP6(nil, a)) }

func appendNtoP6(b []byte, a [16]byte) []byte {
	var w [8]uint16
	for i := range w {
		w[i] = uint16(a[2*i])<<8 | uint16(a[2*i+1])
	}
	// Longest run of zero words (first one wins a tie); runs of one word
	// are not compressed.
	bestBase, bestLen := -1, 0
	curBase, curLen := -1, 0
	for i := 0; i < 8; i++ {
		if w[i] == 0 {
			if curBase == -1 {
				curBase, curLen = i, 1
			} else {
				curLen++
			}
			continue
		}
		if curBase != -1 {
			if bestBase == -1 || curLen > bestLen {
				bestBase, bestLen = curBase, curLen
			}
			curBase = -1
		}
	}
	if curBase != -1 && (bestBase == -1 || curLen > bestLen) {
		bestBase, bestLen = curBase, curLen
	}
	if bestBase != -1 && bestLen < 2 {
		bestBase = -1
	}
	for i := 0; i < 8; i++ {
		if bestBase != -1 && i >= bestBase && i < bestBase+bestLen {
			if i == bestBase {
				b = append(b, ':')
			}
			continue
		}
		if i != 0 {
			b = append(b, ':')
		}
		if i == 6 && bestBase == 0 && (bestLen == 6 || (bestLen == 5 && w[5] == 0xffff)) {
			// glibc's dotted quad: the same digits as an IPv4 address.
			return netip.AddrFrom4([4]byte(a[12:])).AppendTo(b)
		}
		b = strconv.AppendUint(b, uint64(w[i]), 16)
	}
	if bestBase != -1 && bestBase+bestLen == 8 {
		b = append(b, ':')
	}
	return b
}
