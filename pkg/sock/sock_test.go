package sock

import "testing"

func TestStateNames(t *testing.T) {
	cases := []struct {
		s          State
		kernel, ss string
	}{
		{Established, "ESTABLISHED", "ESTAB"},
		{SynSent, "SYN_SENT", "SYN-SENT"},
		{SynRecv, "SYN_RECV", "SYN-RECV"},
		{FinWait1, "FIN_WAIT1", "FIN-WAIT-1"},
		{FinWait2, "FIN_WAIT2", "FIN-WAIT-2"},
		{TimeWait, "TIME_WAIT", "TIME-WAIT"},
		{Close, "CLOSE", "UNCONN"},
		{CloseWait, "CLOSE_WAIT", "CLOSE-WAIT"},
		{LastAck, "LAST_ACK", "LAST-ACK"},
		{Listen, "LISTEN", "LISTEN"},
		{Closing, "CLOSING", "CLOSING"},
		{NewSynRecv, "NEW_SYN_RECV", "SYN-RECV"},
	}
	for _, c := range cases {
		if c.s.String() != c.kernel || c.s.SSLabel() != c.ss {
			t.Errorf("state %d: %q/%q, want %q/%q", c.s, c.s.String(), c.s.SSLabel(), c.kernel, c.ss)
		}
		for _, name := range []string{c.kernel, "TCP_" + c.kernel, "tcp_" + c.kernel} {
			if got, ok := ParseKernelState(name); !ok || got != c.s {
				t.Errorf("ParseKernelState(%q) = %v, %v", name, got, ok)
			}
		}
		if !AllStates.Has(c.s) {
			t.Errorf("AllStates lacks %v", c.s)
		}
	}
	for _, bad := range []State{0, 13, 255} {
		if bad.Valid() || bad.String() == "" || bad.SSLabel() != "UNKNOWN" || AllStates.Has(bad) {
			t.Errorf("state %d treated as valid", bad)
		}
	}
	if _, ok := ParseKernelState("ESTAB"); ok {
		t.Error("ParseKernelState accepted an ss label")
	}
}

func TestStateSet(t *testing.T) {
	s := StateSet(0).With(Listen).With(Established)
	if !s.Has(Listen) || !s.Has(Established) || s.Has(Close) {
		t.Errorf("set %b", s)
	}
	if s.Without(Listen).Has(Listen) {
		t.Error("Without kept the state")
	}
	// The encoding is sock_diag's idiag_states: bit n is state n.
	if StateSet(0).With(Established) != 1<<1 || AllStates != 0x1ffe {
		t.Errorf("encoding: %b %b", StateSet(0).With(Established), AllStates)
	}
}
