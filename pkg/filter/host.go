package filter

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/sstrace/sstrace/pkg/sock"
	"golang.org/x/sys/unix"
)

// parseHost turns a HOST (or, with isPort, a PORT) word into a HostCond the
// way ss's parse_hostcond does, given the preferred family in force (set by
// -4/-6/-x and by earlier `inet:`-style prefixes). It also returns the
// family the word pins (0 when it pins none): ss then restricts the whole
// listing to that family.
func (p *parser) parseHost(word string, isPort bool, side Side) (HostCond, error) {
	if word == "" {
		// Only a trailing backslash makes an empty word; ss reads it as
		// "any", which "*" says printably.
		word = "*"
	}
	h := HostCond{Side: side, Word: word, PortOnly: isPort, Port: -1}
	fam := p.family
	addr := word
	for _, pf := range []struct {
		prefix string
		fam    uint8
	}{
		{"unix:", unix.AF_UNIX}, {"link:", unix.AF_PACKET}, {"netlink:", unix.AF_NETLINK},
		{"vsock:", unix.AF_VSOCK}, {"inet:", unix.AF_INET}, {"inet6:", unix.AF_INET6},
	} {
		if strings.HasPrefix(addr, pf.prefix) {
			fam = pf.fam
			addr = addr[len(pf.prefix):]
			break
		}
	}

	switch fam {
	case unix.AF_UNSPEC, unix.AF_INET, unix.AF_INET6:
		if err := p.parseInetHost(&h, addr, isPort, fam); err != nil {
			return h, err
		}
	case unix.AF_UNIX:
		// A UNIX condition is a case-insensitive fnmatch pattern on the
		// socket's name; ss keeps the port part as part of the pattern.
		h.Family = unix.AF_UNIX
		h.Pattern = addr
	default:
		return h, fmt.Errorf("sstrace has no %s sockets to filter", sock.FamilyName(fam))
	}

	if fam != unix.AF_UNSPEC {
		// ss: filter_af_set(f, fam) after clearing f->families: the last
		// word with a family wins, for the whole listing and for the words
		// that follow.
		p.family = fam
		p.pinned = fam
	}
	return h, nil
}

func (p *parser) parseInetHost(h *HostCond, addr string, isPort bool, fam uint8) error {
	// Split HOST:PORT exactly as ss does, including its odd corners: a bare
	// IPv6 address needs brackets (the last ':' starts the port), `*X`
	// takes X as the port, and text after ']' is a port even without ':'.
	port, hasPort := "", false
	switch {
	case strings.HasPrefix(addr, "["):
		end := strings.IndexByte(addr, ']')
		if end < 0 {
			return fmt.Errorf("missing ']' in %q", addr)
		}
		port, hasPort = addr[end+1:], true
		addr = addr[1:end]
	case strings.HasPrefix(addr, "*"):
		// The address part is "*" (any); everything after it is the port.
		port, hasPort = addr[1:], true
	default:
		from := 0
		if i := strings.IndexByte(addr, '/'); i >= 0 {
			from = i
		}
		if i := strings.LastIndexByte(addr[from:], ':'); i >= 0 {
			port, hasPort = addr[from+i:], true
			if !isPort {
				addr = addr[:from+i]
			}
		}
	}
	if isPort {
		port, hasPort = addr, true
	}
	if hasPort && port != "" {
		port = strings.TrimPrefix(port, ":")
		if port != "" && port[0] != '*' {
			n, err := p.parsePort(port)
			if err != nil {
				return err
			}
			h.Port = n
		}
	}
	if !isPort && addr != "" && addr[0] != '*' {
		if pr, ok := getPrefix(addr, fam); ok {
			h.Family = pr.Family
			h.Addrs = []Prefix{pr}
			if pr.Bits == 0 {
				// ss only consults the address list when the first entry
				// has a prefix length; `any` and `/0` match every address.
				h.Addrs = nil
			}
			return nil
		}
		addrs, err := p.lookupHost(addr, fam)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("an inet prefix is expected rather than %q", addr)
		}
		h.Family = addrs[0].Family
		h.Addrs = addrs
	}
	return nil
}

// parsePort reads a port: a C integer (any base, any sign, kept even when
// out of range, as ss does), else a service name.
func (p *parser) parsePort(s string) (int, error) {
	if n, ok := getInteger(s); ok {
		return n, nil
	}
	n, err := p.opts.LookupPort(s)
	if err != nil {
		return 0, fmt.Errorf("%q does not look like a port: %w", s, err)
	}
	if n <= 0 {
		return 0, fmt.Errorf("%q does not look like a port", s)
	}
	return n, nil
}

// lookupHost resolves a host name the way ss's get_dns_host does: IPv4
// addresses first, then (without a pinned family) IPv6 ones.
func (p *parser) lookupHost(name string, fam uint8) ([]Prefix, error) {
	addrs, err := p.opts.LookupHost(name)
	if err != nil {
		return nil, err
	}
	var v4, v6 []Prefix
	for _, a := range addrs {
		switch {
		case a.Is4():
			if fam == unix.AF_UNSPEC || fam == unix.AF_INET {
				v4 = append(v4, Prefix{Family: unix.AF_INET, Bits: 32, Addr: addrBytes(a)})
			}
		case a.Is6():
			if fam == unix.AF_UNSPEC || fam == unix.AF_INET6 {
				v6 = append(v6, Prefix{Family: unix.AF_INET6, Bits: 128, Addr: addrBytes(a)})
			}
		}
	}
	return append(v4, v6...), nil
}

// addrBytes lays an address out as ss's inet_prefix data: 4 bytes for IPv4,
// 16 for IPv6 (v4-mapped included), the rest zero.
func addrBytes(a netip.Addr) (b [16]byte) {
	if a.Is4() {
		v := a.As4()
		copy(b[:], v[:])
		return b
	}
	return a.As16()
}

// getPrefix mirrors iproute2's get_prefix_1: ADDR[/LEN] where ADDR is an
// IPv6 address (has ':'), a legacy IPv4 address ("10.8" is 10.8.0.0, parts
// in any C base), or any/all/default; LEN is a number or a dotted netmask.
func getPrefix(s string, fam uint8) (Prefix, bool) {
	addrPart, lenPart, hasLen := strings.Cut(s, "/")
	pr, any, ok := getAddr(addrPart, fam)
	if !ok {
		return Prefix{}, false
	}
	maxBits := 0
	switch pr.Family {
	case unix.AF_INET:
		maxBits = 32
	case unix.AF_INET6:
		maxBits = 128
	}
	if !hasLen {
		if any {
			pr.Bits = 0
		} else {
			pr.Bits = maxBits
		}
		return pr, true
	}
	if any {
		return Prefix{}, false
	}
	plen, ok := getNetmask(lenPart)
	if !ok || int(plen) > maxBits {
		return Prefix{}, false
	}
	pr.Bits = int(plen)
	return pr, true
}

// getAddr mirrors iproute2's __get_addr_1 for the inet families. any
// reports the any/all/default words, which match every address.
func getAddr(s string, fam uint8) (pr Prefix, any, ok bool) {
	if s == "default" || s == "all" || s == "any" {
		return Prefix{Family: fam}, true, true
	}
	if strings.Contains(s, ":") {
		if fam != unix.AF_UNSPEC && fam != unix.AF_INET6 {
			return Prefix{}, false, false
		}
		a, ok := parseInet6(s)
		if !ok {
			return Prefix{}, false, false
		}
		return Prefix{Family: unix.AF_INET6, Addr: a.As16()}, false, true
	}
	if fam != unix.AF_UNSPEC && fam != unix.AF_INET {
		return Prefix{}, false, false
	}
	b, ok := getAddrIPv4(s)
	if !ok {
		return Prefix{}, false, false
	}
	pr = Prefix{Family: unix.AF_INET}
	copy(pr.Addr[:], b[:])
	return pr, false, true
}

// parseInet6 accepts what inet_pton(AF_INET6) accepts; netip also takes
// zones ("fe80::1%eth0"), which inet_pton refuses.
func parseInet6(s string) (netip.Addr, bool) {
	if strings.ContainsRune(s, '%') {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return netip.Addr{}, false
	}
	return a, true
}

// getAddrIPv4 is iproute2's get_addr_ipv4: up to four dot-separated parts,
// each a C unsigned number (any base) up to 255; missing parts are zero, so
// "127.1" is 127.1.0.0, not inet_aton's 127.0.0.1.
func getAddrIPv4(s string) (b [4]byte, ok bool) {
	for i := 0; i < 4; i++ {
		n, used, _ := cStrtoul(s, 0)
		if used == 0 || n > 255 {
			return b, false
		}
		b[i] = byte(n)
		s = s[used:]
		if s == "" {
			return b, true
		}
		if i == 3 || s[0] != '.' {
			return b, false
		}
		s = s[1:]
	}
	return b, false
}

// getNetmask is iproute2's get_netmask: a prefix length (C unsigned, any
// base) or a dotted-quad netmask such as 255.255.0.0.
func getNetmask(s string) (uint32, bool) {
	if v, ok := getUnsigned(s); ok {
		return v, true
	}
	pr, _, ok := getAddr(s, unix.AF_INET)
	if !ok || pr.Family != unix.AF_INET {
		return 0, false
	}
	mask := uint32(pr.Addr[0])<<24 | uint32(pr.Addr[1])<<16 | uint32(pr.Addr[2])<<8 | uint32(pr.Addr[3])
	host := ^mask
	if host&(host+1) != 0 {
		return 0, false
	}
	bits := uint32(0)
	for ; mask != 0; mask <<= 1 {
		bits++
	}
	return bits, true
}
