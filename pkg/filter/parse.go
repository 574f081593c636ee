package filter

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/sstrace/sstrace/pkg/cgroup2"
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
	tContainer // `container`: a keyword with ParseOptions.Connections only
	tEQ
	tNEQ
	tGEQ
	tLEQ
	tGT
	tLT
	tValue // any other word: an address, port, device, mark or path
	tErr   // the filter file could not be read on (lexer.err)
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
	"container": tContainer,
	">=":        tGEQ, "ge": tGEQ, "geq": tGEQ,
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
	case tLParen, tNot, tDst, tSrc, tDport, tSport, tDev, tFwmark, tCgroup, tAuto, tContainer:
		return true
	}
	return false
}

const (
	expectCond     = `a condition (src, dst, sport, dport, dev, fwmark, cgroup, autobound), "!" or "("`
	expectConnCond = `a condition (src, dst, sport, dport, dev, fwmark, cgroup, container, autobound), "!" or "("`
)

// parser is a recursive-descent twin of ss's bison grammar. The grammar has
// no precedence between and/or: `a or b and c` is `(a or b) and c`, as on
// the real binary.
type parser struct {
	lex *lexer
	// ahead is the lookahead word and its class, valid when peeked.
	ahead     word
	aheadKind tokKind
	peeked    bool
	opts      *ParseOptions
	// family is ss's preferred_family while parsing: from -4/-6/-x, then
	// from each `inet:`/`inet6:`/`unix:` word.
	family uint8
	// pinned is the family the last such word restricted the listing to.
	pinned uint8
	// portRange is read once, on the first `autobound`.
	portRange *[2]int
	// stack counts the symbols ss's bison parser would hold on its stack
	// at this point, to refuse what ss refuses (see push).
	stack int
}

// yyMaxDepth is bison's YYMAXDEPTH, the size of the parser stack ss gives
// up at with "memory exhausted". ss's grammar is left-recursive, so a long
// `a or b or ...` needs only a few entries, but every open "(" and "!"
// holds one until its operand is done, and so does a pending `exprlist
// or`. Refusing what ss refuses also bounds our recursion (parser, Match,
// String) by a few thousand levels whatever the input's size.
const yyMaxDepth = 10000

// push records one more symbol on ss's parser stack, w being the word it
// came from, and fails where bison would: when the stack, with its initial
// state, would reach yyMaxDepth entries. Checked against ss 6.1: 9995 "!"
// before `sport = :22` parse, 9996 do not.
func (p *parser) push(w word) error {
	p.stack++
	if 1+p.stack >= yyMaxDepth {
		if w.pos == 0 { // bison was reducing the empty `eq` at the end
			w = word{pos: p.endPos()}
		}
		return &Error{Word: w.text, Pos: w.pos, Line: w.line, What: "too deeply nested",
			Detail: fmt.Sprintf("ss's parser gives up when its stack of %d entries fills; each open \"(\" or \"!\" takes one, each \"and\"/\"or\" waiting for its right operand two", yyMaxDepth)}
	}
	return nil
}

func (p *parser) peek() (word, tokKind) {
	if !p.peeked {
		w, ok := p.lex.next()
		p.ahead, p.aheadKind, p.peeked = w, tValue, true
		if k, kw := keywords[w.text]; kw && (k != tContainer || p.opts.Connections) {
			p.aheadKind = k
		}
		switch {
		case ok:
		case p.lex.err != nil:
			p.aheadKind = tErr
		default:
			p.aheadKind = tEOF
		}
	}
	return p.ahead, p.aheadKind
}

func (p *parser) next() (word, tokKind) {
	w, k := p.peek()
	if k != tEOF && k != tErr {
		p.peeked = false
	}
	return w, k
}

// unexpected reports the word at the cursor (or the end of the filter),
// or the filter file's error if that is where the words stopped.
func (p *parser) unexpected(expected string) error {
	w, k := p.peek()
	switch k {
	case tErr:
		return p.lex.err
	case tEOF:
		return &Error{Pos: p.endPos(), Line: p.lex.last.line, Detail: "expected " + expected, AtEnd: true}
	}
	return &Error{Word: w.text, Pos: w.pos, Line: w.line, Detail: "expected " + expected}
}

// endPos is one past the last word, 1 when there was none.
func (p *parser) endPos() int {
	if p.lex.last.pos > 0 {
		return p.lex.last.pos + 1
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

// exprList parses `expr (and|or|) expr ...`. On ss's stack it leaves one
// symbol, the exprlist, and holds it plus the operator while parsing each
// right operand.
func (p *parser) exprList() (Node, error) {
	base := p.stack
	l, err := p.expr()
	if err != nil {
		return nil, err
	}
	for {
		w, k := p.peek()
		switch {
		case k == tOr || k == tAnd:
			p.next()
			if err := p.push(w); err != nil {
				return nil, err
			}
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
		p.stack = base + 1
	}
}

// expr parses one condition, "!" expr or "( exprlist )". It pushes what
// bison would push, in the same order, and leaves one symbol (the expr).
func (p *parser) expr() (Node, error) {
	base := p.stack
	defer func() { p.stack = base + 1 }()
	w, k := p.peek()
	switch k {
	case tLParen, tNot, tDst, tSrc, tDport, tSport, tDev, tFwmark, tCgroup, tAuto, tContainer:
		p.next()
		if err := p.push(w); err != nil {
			return nil, err
		}
	}
	switch k {
	case tLParen:
		n, err := p.exprList()
		if err != nil {
			return nil, err
		}
		c, ck := p.peek()
		if ck != tRParen {
			return nil, p.unexpected(fmt.Sprintf(`"and", "or", a condition or ")" closing the "(" at word %d`, w.pos))
		}
		p.next()
		if err := p.push(c); err != nil {
			return nil, err
		}
		return n, nil
	case tNot:
		x, err := p.expr()
		if err != nil {
			return nil, err
		}
		return Not{X: x}, nil
	case tDst, tSrc:
		side := Src
		if k == tDst {
			side = Dst
		}
		hadOp, err := p.operator(tEQ)
		if err != nil {
			return nil, err
		}
		var h HostCond
		err = p.value(hadOp, w.text+" [=]", "a host (ADDR[/PLEN][:PORT], [V6ADDR]:PORT, *:PORT, :PORT, NAME)", func(v word) (err error) {
			if h, err = p.parseHost(v.text, false, side); err != nil {
				return valueError(v, "bad host", err)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		return h, nil
	case tDport, tSport:
		side := Src
		if k == tDport {
			side = Dst
		}
		_, op := p.peek()
		hadOp, err := p.operator(tEQ, tNEQ, tGEQ, tLEQ, tGT, tLT)
		if err != nil {
			return nil, err
		}
		if !hadOp {
			op = tEQ
		}
		var h HostCond
		err = p.value(hadOp, w.text+" OP", "a port (NUMBER, :NUMBER, SERVICE or *)", func(v word) (err error) {
			if h, err = p.parseHost(v.text, true, side); err != nil {
				return valueError(v, "bad port", err)
			}
			return nil
		})
		if err != nil {
			return nil, err
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
	case tDev, tFwmark, tCgroup, tContainer:
		_, op := p.peek()
		hadOp, err := p.operator(tEQ, tNEQ)
		if err != nil {
			return nil, err
		}
		var n Node
		switch k {
		case tDev:
			err = p.value(hadOp, "dev [=|!=]", "an interface name or index", func(v word) error {
				d, err := p.parseDev(v.text)
				if err != nil {
					return valueError(v, "bad device", err)
				}
				n = d
				return nil
			})
		case tFwmark:
			err = p.value(hadOp, "fwmark [=|!=]", "a mark, MARK or MARK/MASK", func(v word) error {
				m, err := parseMark(v.text)
				if err != nil {
					return valueError(v, "bad mark", err)
				}
				n = m
				return nil
			})
		case tContainer:
			err = p.value(hadOp, "container [=|!=]", "a container id or its first digits", func(v word) error {
				c, err := parseContainer(v.text)
				if err != nil {
					return valueError(v, "bad container", err)
				}
				n = c
				return nil
			})
		default:
			err = p.value(hadOp, "cgroup [=|!=]", "a cgroup v2 path", func(v word) error {
				c, err := p.parseCgroup(v.text)
				if err != nil {
					return valueError(v, "bad cgroup", err)
				}
				n = c
				return nil
			})
		}
		if err != nil {
			return nil, err
		}
		if hadOp && op == tNEQ {
			return Not{X: n}, nil
		}
		return n, nil
	case tAuto:
		lo, hi := p.localPortRange()
		return AutoBound{Lo: lo, Hi: hi}, nil
	}
	if p.opts.Connections {
		return nil, p.unexpected(expectConnCond)
	}
	return nil, p.unexpected(expectCond)
}

// operator consumes the operator after a keyword if it is one of ops.
func (p *parser) operator(ops ...tokKind) (bool, error) {
	w, k := p.peek()
	for _, op := range ops {
		if k == op {
			p.next()
			return true, p.push(w)
		}
	}
	return false, nil
}

// value consumes the value word after a keyword (and its operator), in
// the order ss meets things: its lexer parses the value as it reads the
// word, so a bad value is reported first; bison then reduces the empty
// `eq` when there was no operator (a push, even before a syntax error),
// checks the word is a value at all, and pushes it.
func (p *parser) value(hadOp bool, after, expected string, parse func(word) error) error {
	w, k := p.peek()
	switch k {
	case tValue:
		if err := parse(w); err != nil {
			return err
		}
	case tErr:
		return p.unexpected("") // ss's lexer stops at a bad line at once
	}
	if !hadOp {
		if err := p.push(w); err != nil {
			return err
		}
	}
	if k != tValue {
		return p.unexpected(expected + " after " + after)
	}
	p.next()
	return p.push(w)
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
	if p.opts.Connections {
		return p.parseOwnerCgroup(path)
	}
	id, err := p.opts.LookupCgroup(path)
	if err != nil {
		return CgroupCond{}, err
	}
	if id == 0 {
		return CgroupCond{}, fmt.Errorf("cgroup %q has no id", path)
	}
	return CgroupCond{Word: path, ID: id}, nil
}

// parseOwnerCgroup reads `cgroup PATH` for the daemon's connections: the
// owner's cgroup, by its path relative to the cgroup v2 mount (the form
// history shows; the mount point before it is allowed), which need not
// exist any more: a container's connections outlive its cgroup. When it
// does exist its id is kept too, for owners whose path was never found.
func (p *parser) parseOwnerCgroup(word string) (CgroupCond, error) {
	rel := word
	if mnt, err := cgroup2.Mount(); err == nil && mnt != "/" {
		if r, ok := strings.CutPrefix(word, strings.TrimSuffix(mnt, "/")); ok && (r == "" || r[0] == '/') {
			rel = r
		}
	}
	rel = path.Clean("/" + rel)
	id, _ := p.opts.LookupCgroup(rel)
	return CgroupCond{Word: word, Path: rel, ID: id}, nil
}

// parseContainer reads a container id, or its first digits (docker ps and
// crictl ps show 12 or 13): hex, case ignored, at most 64 digits.
func parseContainer(s string) (ContainerCond, error) {
	id := strings.ToLower(s)
	if len(id) == 0 || len(id) > 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return ContainerCond{}, errors.New("expected a container id or its first digits (up to 64 hex digits, as docker ps or crictl ps show them)")
	}
	return ContainerCond{Word: s, ID: id}, nil
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
