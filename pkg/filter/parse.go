package filter

import (
	"fmt"
	"strings"
)

// tokKind is a lexical class of ss's filter grammar (misc/ssfilter.y).
type tokKind uint8

const (
	tEOF tokKind = iota
	tNot
	tAnd
	tOr
	tLParen
	tRParen
	tDst
	tSrc
	tDport
	tSport
	tDev
	tFwmark
	tCgroup
	tAuto
	tEQ
	tNEQ
	tGEQ
	tLEQ
	tGT
	tLT
	tValue // any other word: an address, port, device, mark or path
)

// keywords maps every reserved word to its class. A reserved word is never
// a value: `dev = and` is a syntax error in ss too.
var keywords = map[string]tokKind{
	"!": tNot, "not": tNot,
	"&": tAnd, "&&": tAnd, "and": tAnd,
	"|": tOr, "||": tOr, "or": tOr,
	"(": tLParen, ")": tRParen,
	"dst": tDst, "src": tSrc, "dport": tDport, "sport": tSport,
	"dev": tDev, "fwmark": tFwmark, "cgroup": tCgroup, "autobound": tAuto,
	">=": tGEQ, "ge": tGEQ, "geq": tGEQ,
	"<=": tLEQ, "le": tLEQ, "leq": tLEQ,
	"!=": tNEQ, "ne": tNEQ, "neq": tNEQ,
	"=": tEQ, "==": tEQ, "eq": tEQ,
	">": tGT, "gt": tGT,
	"<": tLT, "lt": tLT,
}

// startsExpr lists the tokens that can begin an expression; one of them
// right after an expression is ss's implicit "and".
func startsExpr(k tokKind) bool {
	switch k {
	case tLParen, tNot, tDst, tSrc, tDport, tSport, tDev, tFwmark, tCgroup, tAuto:
		return true
	}
	return false
}

const expectCond = `a condition (src, dst, sport, dport, dev, fwmark, cgroup, autobound), "!" or "("`

// parser is a recursive-descent twin of ss's bison grammar. The grammar has
// no precedence between and/or: `a or b and c` is `(a or b) and c`, as on
// the real binary.
type parser struct {
	words []word
	i     int
	opts  *ParseOptions
	// family is ss's preferred_family while parsing: from -4/-6/-x, then
	// from each `inet:`/`inet6:`/`unix:` word.
	family uint8
	// pinned is the family the last such word restricted the listing to.
	pinned uint8
	// portRange is read once, on the first `autobound`.
	portRange *[2]int
}

func (p *parser) peek() (word, tokKind) {
	if p.i >= len(p.words) {
		return word{}, tEOF
	}
	w := p.words[p.i]
	if k, ok := keywords[w.text]; ok {
		return w, k
	}
	return w, tValue
}

func (p *parser) next() (word, tokKind) {
	w, k := p.peek()
	if k != tEOF {
		p.i++
	}
	return w, k
}

// unexpected reports the word at the cursor (or the end of the filter).
func (p *parser) unexpected(expected string) error {
	w, k := p.peek()
	if k == tEOF {
		e := &Error{Pos: p.endPos(), Detail: "expected " + expected, AtEnd: true}
		if n := len(p.words); n > 0 {
			e.Line = p.words[n-1].line
		}
		return e
	}
	return &Error{Word: w.text, Pos: w.pos, Line: w.line, Detail: "expected " + expected}
}

func (p *parser) endPos() int {
	if n := len(p.words); n > 0 {
		return p.words[n-1].pos + 1
	}
	return 1
}

func (p *parser) parse() (Node, error) {
	if _, k := p.peek(); k == tEOF {
		return nil, nil
	}
	n, err := p.exprList()
	if err != nil {
		return nil, err
	}
	if _, k := p.peek(); k != tEOF {
		if k == tRParen {
			return nil, p.unexpected(`"and", "or", a condition or the end of the filter (this ")" closes nothing)`)
		}
		return nil, p.unexpected(`"and", "or", a condition or the end of the filter`)
	}
	return n, nil
}

func (p *parser) exprList() (Node, error) {
	l, err := p.expr()
	if err != nil {
		return nil, err
	}
	for {
		_, k := p.peek()
		switch {
		case k == tOr || k == tAnd:
			p.next()
			r, err := p.expr()
			if err != nil {
				return nil, err
			}
			if k == tOr {
				l = Or{L: l, R: r}
			} else {
				l = And{L: l, R: r}
			}
		case startsExpr(k):
			r, err := p.expr()
			if err != nil {
				return nil, err
			}
			l = And{L: l, R: r}
		default:
			return l, nil
		}
	}
}

func (p *parser) expr() (Node, error) {
	w, k := p.peek()
	switch k {
	case tLParen:
		p.next()
		n, err := p.exprList()
		if err != nil {
			return nil, err
		}
		if _, k := p.peek(); k != tRParen {
			return nil, p.unexpected(fmt.Sprintf(`"and", "or", a condition or ")" closing the "(" at word %d`, w.pos))
		}
		p.next()
		return n, nil
	case tNot:
		p.next()
		x, err := p.expr()
		if err != nil {
			return nil, err
		}
		return Not{X: x}, nil
	case tDst, tSrc:
		p.next()
		side := Src
		if k == tDst {
			side = Dst
		}
		if _, k := p.peek(); k == tEQ {
			p.next()
		}
		v, err := p.value(w.text+" [=]", "a host (ADDR[/PLEN][:PORT], [V6ADDR]:PORT, *:PORT, :PORT, NAME)")
		if err != nil {
			return nil, err
		}
		h, err := p.parseHost(v.text, false, side)
		if err != nil {
			return nil, valueError(v, "bad host", err)
		}
		return h, nil
	case tDport, tSport:
		p.next()
		side := Src
		if k == tDport {
			side = Dst
		}
		_, op := p.peek()
		switch op {
		case tEQ, tNEQ, tGEQ, tLEQ, tGT, tLT:
			p.next()
		default:
			op = tEQ
		}
		v, err := p.value(w.text+" OP", "a port (NUMBER, :NUMBER, SERVICE or *)")
		if err != nil {
			return nil, err
		}
		h, err := p.parseHost(v.text, true, side)
		if err != nil {
			return nil, valueError(v, "bad port", err)
		}
		rng := func(ge bool) Node { return PortRange{Side: side, GE: ge, Word: h.Word, Port: h.Port} }
		switch op {
		case tGEQ:
			return rng(true), nil
		case tLEQ:
			return rng(false), nil
		case tGT:
			return Not{X: rng(false)}, nil
		case tLT:
			return Not{X: rng(true)}, nil
		case tNEQ:
			return Not{X: h}, nil
		}
		return h, nil
	case tDev, tFwmark, tCgroup:
		p.next()
		_, op := p.peek()
		if op == tEQ || op == tNEQ {
			p.next()
		} else {
			op = tEQ
		}
		var n Node
		switch k {
		case tDev:
			v, err := p.value("dev [=|!=]", "an interface name or index")
			if err != nil {
				return nil, err
			}
			d, err := p.parseDev(v.text)
			if err != nil {
				return nil, valueError(v, "bad device", err)
			}
			n = d
		case tFwmark:
			v, err := p.value("fwmark [=|!=]", "a mark, MARK or MARK/MASK")
			if err != nil {
				return nil, err
			}
			m, err := parseMark(v.text)
			if err != nil {
				return nil, valueError(v, "bad mark", err)
			}
			n = m
		default:
			v, err := p.value("cgroup [=|!=]", "a cgroup v2 path")
			if err != nil {
				return nil, err
			}
			c, err := p.parseCgroup(v.text)
			if err != nil {
				return nil, valueError(v, "bad cgroup", err)
			}
			n = c
		}
		if op == tNEQ {
			return Not{X: n}, nil
		}
		return n, nil
	case tAuto:
		p.next()
		lo, hi := p.localPortRange()
		return AutoBound{Lo: lo, Hi: hi}, nil
	}
	return nil, p.unexpected(expectCond)
}

// value consumes the value word after a keyword (and its operator).
func (p *parser) value(after, expected string) (word, error) {
	w, k := p.peek()
	if k != tValue {
		return word{}, p.unexpected(expected + " after " + after)
	}
	p.next()
	return w, nil
}

func valueError(w word, what string, err error) error {
	return &Error{Word: w.text, Pos: w.pos, Line: w.line, What: what, Detail: err.Error()}
}

// parseDev mirrors ss's parse_devcond: an interface name (resolved in the
// caller's namespace), else iproute2's "ifN" form, else a C unsigned number.
func (p *parser) parseDev(name string) (DevCond, error) {
	if idx, err := p.opts.LookupIface(name); err == nil && idx != 0 {
		return DevCond{Word: name, Index: idx}, nil
	}
	if strings.HasPrefix(name, "if") {
		// sscanf("if%u"): digits after "if", trailing text ignored.
		if v, n, _ := cStrtoul(name[2:], 10); n > 0 && uint32(v) != 0 {
			return DevCond{Word: name, Index: uint32(v)}, nil
		}
	}
	if v, ok := getUnsigned(name); ok {
		return DevCond{Word: name, Index: v}, nil
	}
	return DevCond{}, fmt.Errorf("no interface %q and not an interface index", name)
}

// parseMark mirrors ss's parse_markmask: sscanf "%i/%i" or "%i", so C
// number syntax, and trailing text after the last number is ignored.
func parseMark(s string) (MarkCond, error) {
	if strings.Contains(s, "/") {
		mark, rest, ok := scanfInt(s)
		if ok && strings.HasPrefix(rest, "/") {
			if mask, _, ok := scanfInt(rest[1:]); ok {
				return MarkCond{Word: s, Mark: mark, Mask: mask}, nil
			}
		}
		return MarkCond{}, fmt.Errorf("expected MARK/MASK, two numbers")
	}
	mark, _, ok := scanfInt(s)
	if !ok {
		return MarkCond{}, fmt.Errorf("expected a number")
	}
	return MarkCond{Word: s, Mark: mark, Mask: 0xffffffff}, nil
}

func (p *parser) parseCgroup(path string) (CgroupCond, error) {
	id, err := p.opts.LookupCgroup(path)
	if err != nil {
		return CgroupCond{}, err
	}
	if id == 0 {
		return CgroupCond{}, fmt.Errorf("cgroup %q has no id", path)
	}
	return CgroupCond{Word: path, ID: id}, nil
}

// localPortRange is ss's is_ephemeral range; like ss it falls back to
// 1024-4999 when the range cannot be read.
func (p *parser) localPortRange() (int, int) {
	if p.portRange == nil {
		lo, hi, err := p.opts.LocalPortRange()
		if err != nil || lo == 0 {
			lo, hi = 1024, 4999
		}
		p.portRange = &[2]int{lo, hi}
	}
	return p.portRange[0], p.portRange[1]
}
