package ssfmt

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// SockStat is what `ss -s` reads from /proc/net/sockstat and
// /proc/net/sockstat6 (of the namespace it runs in), plus Tcp CurrEstab
// from /proc/net/snmp.
type SockStat struct {
	Sockets    int // sockets: used
	TCPInUse   int // TCP: inuse (IPv4 hashed)
	TCPOrphan  int // TCP: orphan
	TCPTW      int // TCP: tw
	TCPAlloc   int // TCP: alloc
	TCPMem     int // TCP: mem
	UDP4       int // UDP: inuse
	RAW4       int // RAW: inuse
	Frag4      int // FRAG: inuse
	Frag4Mem   int // FRAG: memory
	TCP6       int // TCP6: inuse
	UDP6       int // UDP6: inuse
	RAW6       int // RAW6: inuse
	Frag6      int // FRAG6: inuse
	Frag6Mem   int // FRAG6: memory
	TCPCurrEst int // snmp Tcp: CurrEstab
}

// ParseSockstat reads the lines of a sockstat or sockstat6 file into s,
// taking the counters ss takes (the value after the first word on each
// line, and the extra TCP and FRAG values), and leaving the rest alone.
func (s *SockStat) ParseSockstat(r io.Reader) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		// Values sit at odd positions after the id: "TCP: inuse 1 orphan 0 ...".
		val := func(i int) int {
			if 2*i+2 >= len(f) {
				return 0
			}
			v, _ := strconv.Atoi(f[2*i+2])
			return v
		}
		switch f[0] {
		case "sockets:":
			s.Sockets = val(0)
		case "UDP:":
			s.UDP4 = val(0)
		case "UDP6:":
			s.UDP6 = val(0)
		case "RAW:":
			s.RAW4 = val(0)
		case "RAW6:":
			s.RAW6 = val(0)
		case "TCP6:":
			s.TCP6 = val(0)
		case "FRAG:":
			s.Frag4, s.Frag4Mem = val(0), val(1)
		case "FRAG6:":
			s.Frag6, s.Frag6Mem = val(0), val(1)
		case "TCP:":
			s.TCPInUse, s.TCPOrphan, s.TCPTW, s.TCPAlloc, s.TCPMem = val(0), val(1), val(2), val(3), val(4)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read sockstat: %w", err)
	}
	return nil
}

// ParseSNMP takes Tcp CurrEstab from the contents of /proc/net/snmp
// (pairs of "Tcp: names..." and "Tcp: values..." lines).
func (s *SockStat) ParseSNMP(r io.Reader) error {
	sc := bufio.NewScanner(r)
	var header []string
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if header == nil {
			header = f
			continue
		}
		for i, name := range header {
			if name == "CurrEstab" && i < len(f) {
				v, err := strconv.Atoi(f[i])
				if err != nil {
					return fmt.Errorf("snmp Tcp CurrEstab %q: %w", f[i], err)
				}
				s.TCPCurrEst = v
				return nil
			}
		}
		return fmt.Errorf("snmp: no Tcp CurrEstab field")
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read snmp: %w", err)
	}
	return fmt.Errorf("snmp: no Tcp lines")
}

// summaryFigures are the numbers `ss -s` prints, worked out once for the
// text and the JSON form.
type summaryFigures struct {
	Sockets int `json:"sockets"`
	TCP     struct {
		Total    int `json:"total"`
		Estab    int `json:"estab"`
		Closed   int `json:"closed"`
		Orphaned int `json:"orphaned"`
		TimeWait int `json:"timewait"`
	} `json:"tcp"`
	// Transport has raw, udp, tcp, inet and frag, in ss's row order
	// (transportRows).
	Transport map[string]ipSplit `json:"transport"`
}

// ipSplit is one transport row: the total and its IPv4 and IPv6 parts.
type ipSplit struct {
	Total int `json:"total"`
	IPv4  int `json:"ipv4"`
	IPv6  int `json:"ipv6"`
}

// transportRows are ss's row names, in its order, and their JSON keys.
var transportRows = [...]struct{ name, key string }{
	{"RAW", "raw"}, {"UDP", "udp"}, {"TCP", "tcp"}, {"INET", "inet"}, {"FRAG", "frag"},
}

func (s SockStat) figures() summaryFigures {
	f := summaryFigures{Sockets: s.Sockets}
	f.TCP.Total = s.TCPAlloc + s.TCPTW
	f.TCP.Estab = s.TCPCurrEst
	f.TCP.Closed = s.TCPAlloc - (s.TCPInUse + s.TCP6 - s.TCPTW)
	f.TCP.Orphaned = s.TCPOrphan
	f.TCP.TimeWait = s.TCPTW
	split := func(v4, v6 int) ipSplit { return ipSplit{v4 + v6, v4, v6} }
	f.Transport = map[string]ipSplit{
		"raw":  split(s.RAW4, s.RAW6),
		"udp":  split(s.UDP4, s.UDP6),
		"tcp":  split(s.TCPInUse, s.TCP6),
		"inet": split(s.RAW4+s.UDP4+s.TCPInUse, s.RAW6+s.UDP6+s.TCP6),
		"frag": split(s.Frag4, s.Frag6),
	}
	return f
}

// Summary writes `ss -s` output for s.
func Summary(w io.Writer, s SockStat) error {
	f := s.figures()
	col := func(v int) string { return fmt.Sprintf("%-9d", v) }
	var b strings.Builder
	fmt.Fprintf(&b, "Total: %d\n", f.Sockets)
	fmt.Fprintf(&b, "TCP:   %d (estab %d, closed %d, orphaned %d, timewait %d)\n",
		f.TCP.Total, f.TCP.Estab, f.TCP.Closed, f.TCP.Orphaned, f.TCP.TimeWait)
	b.WriteString("\nTransport Total     IP        IPv6\n")
	for _, r := range transportRows {
		v := f.Transport[r.key]
		b.WriteString(r.name + "\t  " + col(v.Total) + " " + col(v.IPv4) + " " + col(v.IPv6) + "\n")
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// SummaryJSON writes what Summary prints as one JSON object on one line
// (ss has no JSON form of -s; the keys follow its text): sockets, tcp
// {total, estab, closed, orphaned, timewait}, and per transport (raw, udp,
// tcp, inet, frag) {total, ipv4, ipv6}.
func SummaryJSON(w io.Writer, s SockStat) error {
	b, err := json.Marshal(s.figures())
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
