//go:build ignore

/* sstrace's kernel side: every TCP state transition, from one of four hooks,
 * through one BPF ring buffer.
 *
 * Hooks, in the order userspace tries them (only one is ever attached):
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
 * record() for how it is held back.
 */
#include "tracer.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Never used at run time: they put the enums in the object's BTF, so that
 * bpf2go -type generates their Go twins and userspace never copies a value
 * by hand. */
const enum event_hook *unused_hook __attribute__((unused));
const enum event_context *unused_context __attribute__((unused));
const enum cookie_source *unused_cookie_source __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));

/* Set by userspace before load. */
const volatile __u32 target_netns = 0;     /* 0: every namespace */
const volatile __u32 wakeup_bytes = 0;     /* wake the reader once this much is pending */
const volatile bool cookie_helper = false; /* bpf_get_socket_cookie works in tracing programs */

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

/* A new child's first event, held back until its next one (see record).
 * LRU: an entry whose socket never had another event cannot stay forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct event);
} deferred SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &slot);
	if (v)
		*v += 1;
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

/* sock_filter keeps TCP sockets of the traced namespace and reads what the
 * filter needs. Tracing programs (tp_btf, fentry) get a BTF-typed pointer
 * and read it with plain loads, which the verifier checks and which cost no
 * helper call; kprobe and classic tracepoint programs must go through
 * bpf_probe_read_kernel (BPF_CORE_READ). `direct` is a constant in every
 * caller, so each program keeps only its own half. */
static __always_inline bool sock_filter(struct sock *sk, bool direct, __u16 *family, __u32 *netns)
{
	__u16 proto = direct ? sk->sk_protocol : BPF_CORE_READ(sk, sk_protocol);
	if (proto != IPPROTO_TCP)
		return false;
	*family = direct ? sk->__sk_common.skc_family : BPF_CORE_READ(sk, __sk_common.skc_family);
	if (*family != AF_INET && *family != AF_INET6)
		return false;
	*netns = direct ? sk->__sk_common.skc_net.net->ns.inum
			: BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return !target_netns || *netns == target_netns;
}

/* sock_ends fills the addresses, ports and cookie of e from the socket. */
static __always_inline void sock_ends(struct event *e, struct sock *sk, bool direct)
{
	if (direct) {
		e->dport = __builtin_bswap16(sk->__sk_common.skc_dport);
		if (e->family == AF_INET) {
			*(__u32 *)e->saddr = sk->__sk_common.skc_rcv_saddr;
			*(__u32 *)e->daddr = sk->__sk_common.skc_daddr;
		} else {
			__builtin_memcpy(e->saddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
			__builtin_memcpy(e->daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
		}
	} else {
		e->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
		if (e->family == AF_INET) {
			BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
			BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
		} else {
			BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
			BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		}
	}
	/* inet_sock lies past struct sock, where the verifier allows no plain
	 * load through a struct sock pointer: always a probe read. */
	e->sport = __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));

	/* cookie_helper is a load-time constant: on kernels without the
	 * helper for tracing programs the verifier never sees the call. */
	if (direct && cookie_helper) {
		e->cookie = bpf_get_socket_cookie(sk);
		e->cookie_src = COOKIE_HELPER;
	} else {
		e->cookie = direct ? sk->__sk_common.skc_cookie.counter
				   : BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		e->cookie_src = e->cookie ? COOKIE_FIELD : COOKIE_NONE;
	}
}

/* final_counters fills the counters read at the transition to CLOSE (the
 * last one of a full socket) and zeroes them otherwise: the ring buffer's
 * memory is not zeroed. One transition in ten pays for the reads. */
static __always_inline void final_counters(struct event *e, struct sock *sk, int newstate)
{
	if (newstate != TCP_CLOSE) {
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
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	e->bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	e->bytes_received = BPF_CORE_READ(tp, bytes_received);
	e->total_retrans = BPF_CORE_READ(tp, total_retrans);
	e->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	/* sk_flags lives in struct sock up to 6.12 and in sock_common
	 * (skc_flags) after: CO-RE keeps the branch the running kernel has. */
	unsigned long flags;
	if (bpf_core_field_exists(sk->__sk_common.skc_flags))
		flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
	else
		flags = BPF_CORE_READ(sk, sk_flags);
	__u8 peer_fin = (flags >> SOCK_DONE) & 1;
	__u32 unread = BPF_CORE_READ(tp, rcv_nxt) - BPF_CORE_READ(tp, copied_seq);
	/* rcv_nxt counts the peer's FIN as one byte. */
	if (peer_fin && unread > 0)
		unread--;
	e->unread = unread;
	e->sk_err = BPF_CORE_READ(sk, sk_err);
	e->peer_fin = peer_fin;
	e->__pad = 0;
}

/* record writes the event straight into the ring buffer (no copy through
 * the stack). tracing says the program has a BTF-typed socket pointer. */
static __always_inline int record(struct sock *sk, int oldstate, int newstate,
				  __u8 hook, bool tracing)
{
	__u16 family;
	__u32 netns;
	if (!sock_filter(sk, tracing, &family, &netns))
		return 0;

	/* A new child's first event (LISTEN -> SYN_RECV, from
	 * inet_csk_clone_lock) fires while the child is still a copy of its
	 * listener: before 6.x kernels its peer address and port are the
	 * listener's (0.0.0.0:0) and its cookie field holds the listener's
	 * cookie, replaced only afterwards. So the event is held back and sent
	 * just before the child's next event (SYN_RECV -> ESTABLISHED, in the
	 * same softirq), with the ends and cookie the child has by then. Only
	 * a child still in SYN_RECV can have a held event: the map is not
	 * touched for the other transitions (nine in ten). */
	__u64 key = (__u64)sk;
	if (oldstate == TCP_SYN_RECV) {
		struct event *held = bpf_map_lookup_elem(&deferred, &key);
		if (held) {
			sock_ends(held, sk, tracing);
			if (held->cookie_src != COOKIE_NONE)
				held->cookie_src = COOKIE_DEFERRED;
			struct event *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
			if (r) {
				__builtin_memcpy(r, held, sizeof(*r));
				commit(r);
			} else {
				count(COUNTER_LOST);
			}
			bpf_map_delete_elem(&deferred, &key);
		}
	}

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_LOST);
		return 0;
	}
	e->family = family;
	e->netns = netns;
	sock_ends(e, sk, tracing);
	e->context = (tracing ? sk->sk_lock.owned : BPF_CORE_READ(sk, sk_lock.owned)) ? CTX_PROCESS : CTX_SOFTIRQ;
	e->ts_ns = bpf_ktime_get_ns();
	e->skaddr = key;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->hook = hook;
	e->cpu = bpf_get_smp_processor_id();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	final_counters(e, sk, newstate);

	if (newstate == TCP_SYN_RECV && oldstate == TCP_LISTEN) {
		/* Through the stack: before 5.19 the verifier takes no
		 * ring-buffer memory as a map value. */
		struct event copy;
		__builtin_memcpy(&copy, e, sizeof(copy));
		if (bpf_map_update_elem(&deferred, &key, &copy, BPF_ANY) == 0) {
			bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
			return 0;
		}
		count(COUNTER_DEFER_FULL);
	}
	commit(e);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_tp_btf, struct sock *sk, int oldstate, int newstate)
{
	return record(sk, oldstate, newstate, HOOK_TP_BTF, true);
}

SEC("tracepoint/sock/inet_sock_set_state")
int handle_tracepoint(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct sock *sk = (struct sock *)BPF_CORE_READ(ctx, skaddr);
	return record(sk, BPF_CORE_READ(ctx, oldstate), BPF_CORE_READ(ctx, newstate),
		      HOOK_TRACEPOINT, false);
}

SEC("fentry/tcp_set_state")
int BPF_PROG(handle_fentry_tcp, struct sock *sk, int state)
{
	return record(sk, BPF_CORE_READ(sk, __sk_common.skc_state), state, HOOK_FENTRY, true);
}

SEC("fentry/inet_sk_set_state")
int BPF_PROG(handle_fentry_inet, struct sock *sk, int state)
{
	return record(sk, BPF_CORE_READ(sk, __sk_common.skc_state), state, HOOK_FENTRY, true);
}

/* listen(): the tracepoint fires at its start, before the port is checked;
 * a failure then goes back to CLOSE through inet_sk_set_state. */
SEC("fentry/inet_csk_listen_start")
int BPF_PROG(handle_fentry_listen, struct sock *sk)
{
	return record(sk, BPF_CORE_READ(sk, __sk_common.skc_state), TCP_LISTEN, HOOK_FENTRY, true);
}

SEC("kprobe/tcp_set_state")
int BPF_KPROBE(handle_kprobe_tcp, struct sock *sk, int state)
{
	return record(sk, BPF_CORE_READ(sk, __sk_common.skc_state), state, HOOK_KPROBE, false);
}

SEC("kprobe/inet_sk_set_state")
int BPF_KPROBE(handle_kprobe_inet, struct sock *sk, int state)
{
	return record(sk, BPF_CORE_READ(sk, __sk_common.skc_state), state, HOOK_KPROBE, false);
}

SEC("kprobe/inet_csk_listen_start")
int BPF_KPROBE(handle_kprobe_listen, struct sock *sk)
{
	return record(sk, BPF_CORE_READ(sk, __sk_common.skc_state), TCP_LISTEN, HOOK_KPROBE, false);
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
