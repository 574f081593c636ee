package filter

import (
	"slices"

	"github.com/sstrace/sstrace/pkg/sock"
)

// ssAll is ss's SS_ALL as a sock.StateSet: every state ss knows. ss's own
// mask also carries bit 0 (its "UNKNOWN"), which no socket has; we add
// NEW_SYN_RECV instead because the kernel dumps request sockets whenever
// SYN-RECV is asked for (inet_diag_dump_icsk), and ss labels them SYN-RECV.
const ssAll = sock.AllStates

// ConnStates is ss's default state set (SS_CONN): every state except
// LISTEN, CLOSE, TIME-WAIT and SYN-RECV. It is what `ss` shows without -a,
// -l or a state word.
const ConnStates = ssAll &^ (1<<sock.Listen | 1<<sock.Close | 1<<sock.TimeWait | 1<<sock.SynRecv | 1<<sock.NewSynRecv)

// ListenStates is what `ss -l` asks for: LISTEN and CLOSE (unconnected
// datagram sockets count as listening in ss's eyes).
const ListenStates = sock.StateSet(1<<sock.Listen | 1<<sock.Close)

// stateNames are the single states ss's scan_state accepts, with its
// aliases. Matching is case-insensitive. Note "listening", not "listen":
// ss 6.1 rejects "listen".
var stateNames = map[string]sock.StateSet{
	"established": 1 << sock.Established,
	"syn-sent":    1 << sock.SynSent,
	"syn-recv":    1<<sock.SynRecv | 1<<sock.NewSynRecv,
	"syn-rcv":     1<<sock.SynRecv | 1<<sock.NewSynRecv,
	"fin-wait-1":  1 << sock.FinWait1,
	"fin-wait-2":  1 << sock.FinWait2,
	"time-wait":   1 << sock.TimeWait,
	"unconnected": 1 << sock.Close,
	"close":       1 << sock.Close,
	"closed":      1 << sock.Close,
	"close-wait":  1 << sock.CloseWait,
	"last-ack":    1 << sock.LastAck,
	"listening":   1 << sock.Listen,
	"closing":     1 << sock.Closing,
	// Groups.
	"all":          ssAll,
	"connected":    ssAll &^ (1<<sock.Close | 1<<sock.Listen),
	"synchronized": ssAll &^ (1<<sock.Close | 1<<sock.Listen | 1<<sock.SynSent),
	"bucket":       1<<sock.SynRecv | 1<<sock.NewSynRecv | 1<<sock.TimeWait,
	"big":          ssAll &^ (1<<sock.SynRecv | 1<<sock.NewSynRecv | 1<<sock.TimeWait),
}

// ParseState returns the states a `state`/`exclude` argument names: a
// single state or one of the groups all, connected, synchronized, bucket
// and big, case-insensitively, exactly as ss 6.1 accepts them.
func ParseState(name string) (sock.StateSet, bool) {
	s, ok := stateNames[asciiLower(name)]
	return s, ok
}

// asciiLower folds only ASCII letters, as C's strcasecmp does in the C
// locale: strings.ToLower would also fold the Kelvin sign to 'k'.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// StateWords lists every word `state` and `exclude` take (single states,
// aliases and groups), sorted: for shell completion.
func StateWords() []string {
	words := make([]string, 0, len(stateNames))
	for w := range stateNames {
		words = append(words, w)
	}
	slices.Sort(words)
	return words
}

// Keywords lists the words that begin a selection or a condition ("state",
// "exclude", "src", "dport", ...), sorted: for shell completion. With
// connections, those of ParseOptions.Connections ("container" too).
func Keywords(connections bool) []string {
	words := []string{"state", "exclude"}
	for w, k := range keywords {
		if k != tNot && k != tLParen && startsExpr(k) && (k != tContainer || connections) {
			words = append(words, w)
		}
	}
	slices.Sort(words)
	return words
}
