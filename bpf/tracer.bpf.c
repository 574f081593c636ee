//go:build ignore

/* sstrace's kernel side: every TCP state transition, from one of four hooks,
 * through one BPF ring buffer.
 *
 * Hooks, in the order userspace tries them (only one is ever attached,
 * tp_btf and fentry with a catcher beside them: see main_running):
 *   tp_btf/inet_sock_set_state      BTF-typed tracepoint (5.5+)
 *   tracepoint/sock/inet_sock_set_state   classic tracepoint (4.16+)
 *   fentry on tcp_set_state, inet_sk_set_state, inet_csk_listen_start
 *   kprobe on the same three functions
 * The tracepoint fires in tcp_set_state(), in inet_sk_set_state() (which
 * makes a new child socket SYN_RECV) and in the inline
 * inet_sk_state_store(), which TCP calls directly only in
 * inet_csk_listen_start() (CLOSE -> LISTEN). The function hooks attach to
 * those three, so every hook yields the same transitions.
 *
 * Cookies: the tracing programs call bpf_get_socket_cookie() where the
 * kernel offers it to them (5.12+), which makes the cookie if needed, exactly
 * like sock_diag does. Elsewhere the programs read sk_cookie, which is 0 until
 * something made it; then two cgroup programs on the cgroup v2 root make it
 * early: sock_create for every socket a task creates, sockops for accepted
 * children (before their SYN_RECV -> ESTABLISHED transition). A child's first
 * event precedes both its cookie and, on older kernels, its addresses: see
 * record() for how userspace holds it back.
 */
#include "tracer.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

/* Dual MIT/GPL, as bpf/procs.bpf.c: MIT like all of sstrace (LICENSE), GPL
 * because the kernel gives the helpers these programs call (probe reads,
 * the ring buffer, task and socket casts) only to GPL-compatible programs. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Never used at run time: they put the enums and the record in the
 * object's BTF, so that bpf2go -type generates their Go twins and userspace
 * never copies a value or an offset by hand. */
const enum event_hook *unused_hook __attribute__((unused));
const enum event_context *unused_context __attribute__((unused));
const enum cookie_source *unused_cookie_source __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));
const struct event *unused_event __attribute__((unused));

/* Set by userspace before load. */
const volatile __u32 target_netns = 0;     /* 0: every namespace */
const volatile __u32 wakeup_bytes = 0;     /* wake the reader once this much is pending */
const volatile bool cookie_helper = false; /* bpf_get_socket_cookie works in tracing programs */
const volatile bool task_btf = false;      /* bpf_get_current_task_btf works (tracing programs, 5.11+) */
/* trace FILTER's ports, when the filter needs one of them at either end
 * (pkg/filter: Query.Ports): host order, the first port_count used; 0: any. */
#define MAX_PORTS 16
const volatile __u32 port_count = 0;
const volatile __u16 ports[MAX_PORTS] = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* resized by userspace */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &slot);
	if (v)
		*v += 1;
}

/* Recursion. The kernel runs a tracing program (tp_btf, fentry) at most
 * once at a time on a CPU: a transition in softirq (the peer's ACK taking a
 * socket to FIN_WAIT2) that interrupts the program while it handles one in
 * process context is skipped, and shows only in the program's
 * recursion_misses: 1 in 150 transitions under loopback churn, a whole
 * FIN_WAIT1 -> FIN_WAIT2 -> CLOSE at a time.
 *
 * So the hook has a second program beside the main one, the catcher, on the
 * same attach point. The kernel keeps a separate "running" count for each
 * program, so the catcher runs exactly when the main one is skipped. It
 * records a transition only while the main program is running on its CPU
 * (main_running, set and cleared by the main program). At any other time
 * the main program sees the transition itself, whether it runs before or
 * after the catcher. What is left is a few instructions at the main
 * program's entry and exit, where the kernel counts it running and the
 * flag does not. Userspace counts those: the main program's misses minus
 * COUNTER_CAUGHT. The classic tracepoint and kprobes have one recursion
 * guard shared by every program, so a catcher cannot help them.
 *
 * Kernels before 5.12 re-enter a tracing program instead of skipping it:
 * userspace attaches no catcher there (nothing to catch), and orders the
 * programs so that the main one runs first at each attach point (a nested
 * main program clears the flag before its catcher looks). */
enum main_slot {
	MAIN_STATE = 0, /* tp_btf, fentry/tcp_set_state */
	MAIN_CHILD = 1, /* fentry/inet_sk_set_state */
	MAIN_SLOTS = 2,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAIN_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} main_running SEC(".maps");

static __always_inline __u32 *running_flag(__u32 slot)
{
	return bpf_map_lookup_elem(&main_running, &slot);
}

/* caught reports whether a catcher should record this transition: its main
 * program (slot) is running on this CPU, so the kernel skipped it there. */
static __always_inline bool caught(__u32 slot)
{
	__u32 *run = running_flag(slot);
	if (!run || !*run)
		return false;
	count(COUNTER_CAUGHT);
	return true;
}

/* commit publishes a reserved record and counts it. Wakeups are batched:
 * the reader drains on its own short deadline, and is woken early only
 * when wakeup_bytes are pending. Only every WAKEUP_EVERY-th record of a CPU
 * looks: bpf_ringbuf_query reads the consumer position, a cache line the
 * reader writes for every record, and once the reader lags wakeup_bytes
 * behind, asking for a wakeup per record queued an irq_work (a self-IPI)
 * per record until the reader caught up. bpf_stats: 1 250 -> 400 ns per
 * transition under full churn (docs/BENCHMARKS.md). */
#define WAKEUP_EVERY 64

static __always_inline void commit(struct event *r)
{
	__u32 slot = COUNTER_EVENTS;
	__u64 *n = bpf_map_lookup_elem(&counters, &slot);
	__u64 flags = BPF_RB_NO_WAKEUP;
	if (n && (++*n & (WAKEUP_EVERY - 1)) == 0 &&
	    bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(r, flags);
}

/* How a program reads the socket. Every caller passes a constant, so each
 * program keeps only its own branches.
 *   READ_BTF (tp_btf, fentry): a BTF-typed pointer, read with plain loads,
 *     which the verifier checks and which cost no helper call; the
 *     tcp_sock fields past struct sock through bpf_skc_to_tcp_sock.
 *   READ_TP (classic tracepoint): the tracepoint's record already holds
 *     protocol, family and ports (plain loads of the context); the rest
 *     through bpf_probe_read_kernel (BPF_CORE_READ).
 *   READ_PROBE (kprobe): everything through bpf_probe_read_kernel. */
enum read_mode { READ_BTF, READ_TP, READ_PROBE };

/* sock_filter keeps TCP sockets of the traced namespace and reads what the
 * filter needs. */
static __always_inline bool sock_filter(struct sock *sk, enum read_mode m,
					struct trace_event_raw_inet_sock_set_state *ctx,
					__u16 *family, __u32 *netns)
{
	__u16 proto = m == READ_BTF ? sk->sk_protocol
		    : m == READ_TP  ? ctx->protocol
				    : BPF_CORE_READ(sk, sk_protocol);
	if (proto != IPPROTO_TCP)
		return false;
	*family = m == READ_BTF ? sk->__sk_common.skc_family
		: m == READ_TP  ? ctx->family
				: BPF_CORE_READ(sk, __sk_common.skc_family);
	if (*family != AF_INET && *family != AF_INET6)
		return false;
	*netns = m == READ_BTF ? sk->__sk_common.skc_net.net->ns.inum
			       : BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return !target_netns || *netns == target_netns;
}

/* sock_ports reads the socket's ports, in host order. tp is the socket as a
 * tcp_sock (READ_BTF; NULL if the kernel said it is not one, never seen for
 * this tracepoint's sockets). */
static __always_inline void sock_ports(struct sock *sk, enum read_mode m,
				       struct trace_event_raw_inet_sock_set_state *ctx,
				       struct tcp_sock *tp, __u16 *sport, __u16 *dport)
{
	if (m == READ_BTF) {
		*dport = __builtin_bswap16(sk->__sk_common.skc_dport);
		/* inet_sock lies past struct sock, where the verifier
		 * allows no plain load through a struct sock pointer. */
		*sport = tp ? __builtin_bswap16(tp->inet_conn.icsk_inet.inet_sport)
			    : __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	} else if (m == READ_TP) {
		/* The record's ports are inet_sport and skc_dport, already
		 * in host order: the same fields as ours. */
		*sport = ctx->sport;
		*dport = ctx->dport;
	} else {
		*sport = __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
		*dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	}
}

/* port_wanted tells whether trace FILTER's ports let the transition
 * through: no ports asked, or one of them at either end. (Before 6.x a new
 * child's first event has no peer yet, the listener's 0:0: a filter on the
 * peer's port alone keeps the child's later events only.) */
static __always_inline bool port_wanted(__u16 sport, __u16 dport)
{
	for (int i = 0; i < MAX_PORTS; i++) {
		if (i >= port_count)
			break;
		if (ports[i] == sport || ports[i] == dport)
			return true;
	}
	return false;
}

/* sock_ends fills the addresses and cookie of e from the socket. */
static __always_inline void sock_ends(struct event *e, struct sock *sk, enum read_mode m)
{
	if (m == READ_BTF) {
		if (e->family == AF_INET) {
			*(__u32 *)e->saddr = sk->__sk_common.skc_rcv_saddr;
			*(__u32 *)e->daddr = sk->__sk_common.skc_daddr;
		} else {
			__builtin_memcpy(e->saddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
			__builtin_memcpy(e->daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
		}
	} else {
		if (e->family == AF_INET) {
			BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
			BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
		} else {
			BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
			BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		}
	}

	/* cookie_helper is a load-time constant: on kernels without the
	 * helper for tracing programs the verifier never sees the call. The
	 * helper returns the field once it is made, so the call is needed
	 * only while it is 0 (the first event of a socket, at most). */
	if (m == READ_BTF && cookie_helper) {
		e->cookie = sk->__sk_common.skc_cookie.counter;
		if (!e->cookie)
			e->cookie = bpf_get_socket_cookie(sk);
		e->cookie_src = COOKIE_HELPER;
	} else {
		e->cookie = m == READ_BTF ? sk->__sk_common.skc_cookie.counter
					  : BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		e->cookie_src = e->cookie ? COOKIE_FIELD : COOKIE_NONE;
	}
}

/* current_task fills the task fields of e: one helper call and plain loads
 * where the kernel gives tracing programs the task's BTF pointer (task_btf,
 * a load-time constant), four helpers elsewhere. The values are the same:
 * the comm, NUL-padded in the task (set_task_comm pads it), is copied as
 * bpf_get_current_comm copies it; the uid is the global one
 * (bpf_get_current_uid_gid maps it to the initial namespace, where the
 * mapping is the identity). */
static __always_inline void current_task(struct event *e, enum read_mode m)
{
	if (m == READ_BTF && task_btf) {
		struct task_struct *task = bpf_get_current_task_btf();
		e->pid = task->tgid;
		e->tid = task->pid;
		e->uid = task->cred->uid.val;
		e->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
		__builtin_memcpy(e->comm, task->comm, sizeof(e->comm));
		return;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

/* The counters read at the transition to CLOSE, as plain loads through a
 * tcp_sock pointer (READ_BTF) or through bpf_probe_read_kernel. */
#define TCP_FIELD(m, tp, f) ((m) == READ_BTF ? (tp)->f : BPF_CORE_READ((tp), f))

/* final_counters fills the counters read at the transition to CLOSE (the
 * last one of a full socket) and zeroes them otherwise: the ring buffer's
 * memory is not zeroed. Two transitions in ten pay for the reads. */
static __always_inline void final_counters(struct event *e, struct sock *sk, enum read_mode m,
					   struct tcp_sock *tp, int newstate)
{
	if (newstate != TCP_CLOSE || (m == READ_BTF && !tp)) {
		e->bytes_acked = 0;
		e->bytes_received = 0;
		e->total_retrans = 0;
		e->srtt_us = 0;
		e->unread = 0;
		e->sk_err = 0;
		e->peer_fin = 0;
		e->__pad = 0;
		return;
	}
	if (m != READ_BTF)
		tp = (struct tcp_sock *)sk;
	e->bytes_acked = TCP_FIELD(m, tp, bytes_acked);
	e->bytes_received = TCP_FIELD(m, tp, bytes_received);
	e->total_retrans = TCP_FIELD(m, tp, total_retrans);
	e->srtt_us = TCP_FIELD(m, tp, srtt_us) >> 3;
	/* sk_flags lives in struct sock up to 6.12 and in sock_common
	 * (skc_flags) after: CO-RE keeps the branch the running kernel has. */
	unsigned long flags;
	if (bpf_core_field_exists(sk->__sk_common.skc_flags))
		flags = m == READ_BTF ? sk->__sk_common.skc_flags : BPF_CORE_READ(sk, __sk_common.skc_flags);
	else
		flags = m == READ_BTF ? sk->sk_flags : BPF_CORE_READ(sk, sk_flags);
	__u8 peer_fin = (flags >> SOCK_DONE) & 1;
	__u32 unread = TCP_FIELD(m, tp, rcv_nxt) - TCP_FIELD(m, tp, copied_seq);
	/* rcv_nxt counts the peer's FIN as one byte. */
	if (peer_fin && unread > 0)
		unread--;
	e->unread = unread;
	e->sk_err = m == READ_BTF ? sk->sk_err : BPF_CORE_READ(sk, sk_err);
	e->peer_fin = peer_fin;
	e->__pad = 0;
}

/* record writes the event straight into the ring buffer (no copy through
 * the stack). ctx is the classic tracepoint's record (READ_TP only).
 *
 * A new child's first event (LISTEN -> SYN_RECV, from inet_csk_clone_lock)
 * fires while the child is still a copy of its listener: before 6.x
 * kernels its peer address and port are the listener's (0.0.0.0:0), and
 * its cookie is replaced just after. It is sent as it is; userspace
 * (pkg/tracer) holds it back until the child's next event and gives it that
 * event's ends and cookie. That was a hash map here: an update, a lookup
 * and a delete per connection, about a quarter of the program's time. */
static __always_inline int record(struct sock *sk, int oldstate, int newstate,
				  __u8 hook, enum read_mode m,
				  struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u16 family, sport, dport;
	__u32 netns;
	if (!sock_filter(sk, m, ctx, &family, &netns))
		return 0;
	/* One helper call gives plain loads of the tcp_sock fields (the
	 * local port, the final counters) instead of a probe read each. */
	struct tcp_sock *tp = NULL;
	/* port_count is a load-time constant: the verifier keeps one of the
	 * two places the ports are read. Reading them after the reservation
	 * when nothing filters on them measured 6 ns less per transition. */
	if (port_count) {
		tp = m == READ_BTF ? bpf_skc_to_tcp_sock(sk) : NULL;
		sock_ports(sk, m, ctx, tp, &sport, &dport);
		if (!port_wanted(sport, dport))
			return 0;
	}

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_LOST);
		return 0;
	}
	if (!port_count) {
		tp = m == READ_BTF ? bpf_skc_to_tcp_sock(sk) : NULL;
		sock_ports(sk, m, ctx, tp, &sport, &dport);
	}
	e->family = family;
	e->netns = netns;
	e->sport = sport;
	e->dport = dport;
	sock_ends(e, sk, m);
	e->context = (m == READ_BTF ? sk->sk_lock.owned : BPF_CORE_READ(sk, sk_lock.owned)) ? CTX_PROCESS : CTX_SOFTIRQ;
	e->ts_ns = bpf_ktime_get_ns();
	e->skaddr = (__u64)sk;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->hook = hook;
	e->cpu = bpf_get_smp_processor_id();
	current_task(e, m);
	final_counters(e, sk, m, tp, newstate);
	commit(e);
	return 0;
}

/* MAIN runs one main program's body with its main_running slot set. */
#define MAIN(slot, body)                         \
	do {                                     \
		__u32 *run = running_flag(slot); \
		if (run)                     \
			*run = 1;            \
		body;                        \
		if (run)                     \
			*run = 0;            \
	} while (0)

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_tp_btf, struct sock *sk, int oldstate, int newstate)
{
	MAIN(MAIN_STATE, record(sk, oldstate, newstate, HOOK_TP_BTF, READ_BTF, NULL));
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(catch_tp_btf, struct sock *sk, int oldstate, int newstate)
{
	if (!caught(MAIN_STATE))
		return 0;
	return record(sk, oldstate, newstate, HOOK_TP_BTF, READ_BTF, NULL);
}

SEC("tracepoint/sock/inet_sock_set_state")
int handle_tracepoint(struct trace_event_raw_inet_sock_set_state *ctx)
{
	/* The record is the context: plain loads. */
	return record((struct sock *)ctx->skaddr, ctx->oldstate, ctx->newstate,
		      HOOK_TRACEPOINT, READ_TP, ctx);
}

/* A catcher each for the two functions that run in softirq as well as in
 * process context (a new child is made in process context when its SYN
 * waited in the listener's backlog); each checks its own main program's
 * slot, since a transition interrupting one function's program goes
 * through the other's unhindered. listen() is process context only. */
SEC("fentry/tcp_set_state")
int BPF_PROG(handle_fentry_tcp, struct sock *sk, int state)
{
	MAIN(MAIN_STATE, record(sk, sk->__sk_common.skc_state, state, HOOK_FENTRY, READ_BTF, NULL));
	return 0;
}

SEC("fentry/tcp_set_state")
int BPF_PROG(catch_fentry_tcp, struct sock *sk, int state)
{
	if (!caught(MAIN_STATE))
		return 0;
	return record(sk, sk->__sk_common.skc_state, state, HOOK_FENTRY, READ_BTF, NULL);
}

SEC("fentry/inet_sk_set_state")
int BPF_PROG(handle_fentry_inet, struct sock *sk, int state)
{
	MAIN(MAIN_CHILD, record(sk, sk->__sk_common.skc_state, state, HOOK_FENTRY, READ_BTF, NULL));
	return 0;
}

SEC("fentry/inet_sk_set_state")
int BPF_PROG(catch_fentry_inet, struct sock *sk, int state)
{
	if (!caught(MAIN_CHILD))
		return 0;
	return record(sk, sk->__sk_common.skc_state, state, HOOK_FENTRY, READ_BTF, NULL);
}

/* listen(): the tracepoint fires at its start, before the port is checked;
 * a failure then goes back to CLOSE through inet_sk_set_state. */
SEC("fentry/inet_csk_listen_start")
int BPF_PROG(handle_fentry_listen, struct sock *sk)
{
	return record(sk, sk->__sk_common.skc_state, TCP_LISTEN, HOOK_FENTRY, READ_BTF, NULL);
}

SEC("kprobe/tcp_set_state")
int BPF_KPROBE(handle_kprobe_tcp, struct sock *sk, int state)
{
	return record(sk, BPF_CORE_READ(sk, __sk_common.skc_state), state, HOOK_KPROBE, READ_PROBE, NULL);
}

SEC("kprobe/inet_sk_set_state")
int BPF_KPROBE(handle_kprobe_inet, struct sock *sk, int state)
{
	return record(sk, BPF_CORE_READ(sk, __sk_common.skc_state), state, HOOK_KPROBE, READ_PROBE, NULL);
}

SEC("kprobe/inet_csk_listen_start")
int BPF_KPROBE(handle_kprobe_listen, struct sock *sk)
{
	return record(sk, BPF_CORE_READ(sk, __sk_common.skc_state), TCP_LISTEN, HOOK_KPROBE, READ_PROBE, NULL);
}

/* Cookie makers, attached to the cgroup v2 root only where the hook in use
 * cannot call bpf_get_socket_cookie itself. Both only ask for the cookie,
 * which makes the kernel assign it; they never change the socket. */
SEC("cgroup/sock_create")
int make_cookie_on_create(struct bpf_sock *ctx)
{
	bpf_get_socket_cookie(ctx);
	return 1; /* allow */
}

SEC("sockops")
int make_cookie_on_established(struct bpf_sock_ops *ctx)
{
	if (ctx->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB ||
	    ctx->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		bpf_get_socket_cookie(ctx);
	return 1;
}
