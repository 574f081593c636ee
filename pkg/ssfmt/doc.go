// Package ssfmt renders socket rows ([]sock.Socket, or a stream of them)
// exactly as iproute2 6.1 `ss` prints them, plus a JSON form ss lacks.
//
// The renderer does not care where rows come from: a one-shot sock_diag
// dump (`sstrace ss`) and, later, the daemon's event-maintained table feed
// the same Table. Everything ss looks up on the system while printing
// (service and protocol names, host names for -r, interface names for the
// %iface suffix, cgroup paths for -e) comes through the Names interface, so
// the package itself touches no files and its output is a pure function of
// its inputs; package sysnames implements Names the way ss resolves them.
//
// # Text output
//
// Table reproduces ss's column machinery: every field is buffered, column
// widths are the widest field seen (ss's "compact" mode, used when stdout
// is not a terminal), or are stretched to a terminal width when
// Options.Width is set, and ss's quirks are kept (the last row's extension
// field does not count towards its column width, output is flushed in
// batches of about 5 MB with widths only ever growing). Summary renders
// `ss -s` from /proc/net/sockstat, sockstat6 and snmp contents.
//
// # JSON output
//
// JSON writes one object per socket per line (JSON Lines). Keys are stable
// and are those of every sstrace JSON (docs/JSON.md): kernel state names,
// saddr/daddr, a decimal cookie; ss's own words (ESTAB, src, a hex sk:)
// stay in its human output. A key whose value is absent or unknown is
// omitted, never null:
//
//	netid        string  "tcp", "udp", "raw", "mptcp", "u_str", "u_dgr", "u_seq",
//	                     "p_raw", "p_dgr", "nl" (ss's Netid)
//	family       string  "inet", "inet6", "unix", "link" (packet) or "netlink"
//	state        string  kernel name without TCP_: "ESTABLISHED", "LISTEN",
//	                     "CLOSE" (ss's UNCONN), "TIME_WAIT", ...
//	recvq        number  Recv-Q
//	sendq        number  Send-Q
//	saddr        string  local address, canonical text ("127.0.0.1", "::1"); inet only
//	sport        number  local port (protocol number for raw sockets); inet only
//	daddr        string  peer address; inet only
//	dport        number  peer port; inet only
//	iface        string  bound interface name (SO_BINDTODEVICE, a packet socket's
//	                     bind); omitted when unbound
//	protocol     number  a packet socket's Ethernet protocol (3 is ETH_P_ALL), a
//	                     netlink socket's netlink protocol (0 is NETLINK_ROUTE)
//	portid       number  a netlink socket's port id (0: the kernel's)
//	dst_portid   number  the port id a netlink socket is connected to
//	dst_group    number  the group a netlink socket is connected to
//	groups       number  a netlink socket's multicast groups 1-64 (bit n-1: group n)
//	path         string  bound UNIX name ("@" prefix for abstract names); unix only
//	peer_inode   number  inode of the connected UNIX peer; unix only
//	pending      [number] inodes of not yet accepted connections (UNIX listeners)
//	netns        number  inode of the socket's network namespace
//	uid          number  owner uid
//	inode        number  socket inode (0 for TIME-WAIT and request sockets)
//	cookie       number  socket cookie, decimal (ss -e prints it in hex after "sk:")
//	timer        object  {"name": "on"|"keepalive"|"timewait"|"persist"|"unknown",
//	                      "expires_ms": number, "retrans": number}
//	mark         number  SO_MARK (fwmark)
//	cgroup_id    number  cgroup v2 id
//	cgroup       string  cgroup v2 path, when Names resolves it
//	v6only       bool    IPV6_V6ONLY (inet6 only)
//	shutdown     string  ss's shutdown arrows: "<->", "-->", "<--", "---"
//	tos          number  IP TOS
//	tclass       number  IPv6 traffic class
//	owners       [object] [{"comm": string, "pid": number, "fd": number, "tid": number (-T only)}], ss -p order
//	skmem        object  {"rmem_alloc","rcvbuf","wmem_alloc","sndbuf","fwd_alloc",
//	                      "wmem_queued","optmem","backlog","drops"} (bytes)
//	tcp_info     object  see below
//	mptcp_info   object  MPTCP sockets (-M -i): {"subflows", "add_addr_signal", "add_addr_accepted",
//	                      "subflows_max", "add_addr_signal_max", "add_addr_accepted_max",
//	                      "flags" (1 fallback, 2 remote key), "token", "write_seq", "snd_una", "rcv_nxt"}
//
// tcp_info holds the kernel's struct tcp_info in its own units, limited to
// the bytes the kernel sent (fields past that length are omitted), plus the
// congestion-control details:
//
//	state, ca_state, retransmits, probes, backoff, options, snd_wscale,
//	rcv_wscale, delivery_rate_app_limited (bool), rto_us, ato_us, snd_mss,
//	rcv_mss, unacked, sacked, lost, retrans, fackets, last_data_sent_ms,
//	last_ack_sent_ms, last_data_recv_ms, last_ack_recv_ms, pmtu,
//	rcv_ssthresh, rtt_us, rttvar_us, snd_ssthresh, snd_cwnd, advmss,
//	reordering, rcv_rtt_us, rcv_space, total_retrans, pacing_rate_Bps,
//	max_pacing_rate_Bps, bytes_acked, bytes_received, segs_out, segs_in,
//	notsent_bytes, min_rtt_us, data_segs_in, data_segs_out,
//	delivery_rate_Bps, busy_time_us, rwnd_limited_us, sndbuf_limited_us,
//	delivered, delivered_ce, bytes_sent, bytes_retrans, dsack_dups,
//	reord_seen, rcv_ooopack, snd_wnd
//	congestion   string  congestion-control algorithm ("cubic", "bbr", ...)
//	bbr          object  {"bw_Bps", "min_rtt_us", "pacing_gain", "cwnd_gain"}
//	dctcp        object  {"enabled", "ce_state", "alpha", "ab_ecn", "ab_tot"}
//	vegas        object  {"enabled", "rtt_cnt", "rtt_us", "min_rtt_us"}
package ssfmt
