/* Kernel types the tracer reads, declared CO-RE style: only the fields used,
 * each with the reason it is read. preserve_access_index makes libbpf
 * relocate every access against the running kernel's BTF, so field offsets
 * here never need to match any particular kernel. Anonymous unions of the
 * real layout are flattened: CO-RE matches fields by name through them.
 *
 * Also: struct event, the record sent through the ring buffer. bpf2go
 * (-type event) generates its Go twin, so C and Go cannot disagree on it. */
#ifndef SSTRACE_TRACER_H
#define SSTRACE_TRACER_H

#include <linux/types.h>
#include <linux/bpf.h>   /* uapi: map types, flags, sockops ctx (ABI, not CO-RE) */

/*
 * The kprobe context: the architecture's saved registers, an ABI (not
 * CO-RE), as the uapi <asm/ptrace.h> of each architecture lays them out.
 * Declared here rather than included so that one source builds for every
 * target bpf2go builds (-target amd64,arm64; it defines __TARGET_ARCH_*),
 * without the other architecture's libc headers. bpf_tracing.h's
 * PT_REGS_PARM* read them.
 */
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
	unsigned long rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss;
};
#elif defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#else
#error "unknown target architecture: build through bpf2go -target amd64,arm64"
#endif

typedef _Bool bool;
#define true 1
#define false 0

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* include/net/tcp_states.h */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT,
	TCP_SYN_RECV,
	TCP_FIN_WAIT1,
	TCP_FIN_WAIT2,
	TCP_TIME_WAIT,
	TCP_CLOSE,
	TCP_CLOSE_WAIT,
	TCP_LAST_ACK,
	TCP_LISTEN,
	TCP_CLOSING,
	TCP_NEW_SYN_RECV,
};

struct in6_addr {
	union {
		__u8 u6_addr8[16]; /* s6_addr is a macro for this */
	} in6_u;
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum; /* the netns inode, as /proc/PID/ns/net shows it */
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;

typedef struct {
	__s64 counter;
} __attribute__((preserve_access_index)) atomic64_t;

struct sock_common {
	__be32 skc_daddr;                /* IPv4 peer */
	__be32 skc_rcv_saddr;            /* IPv4 local */
	__be16 skc_dport;                /* peer port, network order */
	unsigned short skc_family;       /* AF_INET / AF_INET6 */
	volatile unsigned char skc_state;/* old state for the tcp_set_state hooks */
	possible_net_t skc_net;          /* netns inode */
	struct in6_addr skc_v6_daddr;    /* IPv6 peer */
	struct in6_addr skc_v6_rcv_saddr;/* IPv6 local */
	atomic64_t skc_cookie;           /* cookie, where the helper is missing */
	unsigned long skc_flags;         /* sk_flags moved here in 6.1x (see struct sock) */
} __attribute__((preserve_access_index));

typedef struct {
	int owned; /* 1 while a task holds lock_sock(): process context */
} __attribute__((preserve_access_index)) socket_lock_t;

struct sock {
	struct sock_common __sk_common;
	socket_lock_t sk_lock;
	__u16 sk_protocol; /* IPPROTO_TCP only: DCCP/SCTP share inet_sk_set_state */
	int sk_err;        /* at CLOSE: ECONNREFUSED, ETIMEDOUT, ECONNRESET... (outcome) */
	unsigned long sk_flags; /* at CLOSE: SOCK_DONE = the peer's FIN came (tcp_fin sets it); in sock_common on newer kernels */
} __attribute__((preserve_access_index));

/* enum sock_flags: SOCK_DEAD, SOCK_DONE, ... (stable since 2.6). Not
 * sk_shutdown's RCV_SHUTDOWN: close() sets both shutdown bits, FIN or not. */
#define SOCK_DONE 1

/* inet_sock extends struct sock. inet_sport is the local port that stays
 * set when a closing socket gives its port back (skc_num is zeroed then),
 * the same field the tracepoint itself reports. */
struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
} __attribute__((preserve_access_index));

/* The path from tcp_sock to inet_sock, for plain loads of inet_sport
 * through the pointer bpf_skc_to_tcp_sock returns. */
struct inet_connection_sock {
	struct inet_sock icsk_inet;
} __attribute__((preserve_access_index));

/* tcp_sock extends inet_connection_sock. The counters are read only at the
 * CLOSE transition, for the connection's history (the same fields tcplife
 * reads). */
struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u64 bytes_acked;    /* bytes sent and acknowledged */
	__u64 bytes_received; /* bytes received in sequence */
	__u32 total_retrans;  /* segments retransmitted over the life */
	__u32 srtt_us;        /* smoothed RTT << 3, microseconds */
	__u32 rcv_nxt;        /* with copied_seq: bytes the application never read */
	__u32 copied_seq;
} __attribute__((preserve_access_index));

/* The current task, read with plain loads through
 * bpf_get_current_task_btf() (tracing programs, 5.11+) instead of four
 * helpers per event. Each field is what the helper of the same name
 * returns. */
typedef struct {
	__u32 val;
} __attribute__((preserve_access_index)) kuid_t;

struct cred {
	kuid_t uid; /* bpf_get_current_uid_gid's low half (global uid) */
} __attribute__((preserve_access_index));

struct kernfs_node {
	__u64 id; /* the cgroup id: bpf_get_current_cgroup_id */
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp; /* the task's cgroup v2 */
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;                      /* thread id */
	int tgid;                     /* process id */
	const struct cred *cred;      /* uid */
	struct css_set *cgroups;      /* cgroup v2 id */
	char comm[16];                /* bpf_get_current_comm */
} __attribute__((preserve_access_index));

/* The classic tracepoint's record (include/trace/events/sock.h), the
 * program's context: plain loads, where the socket needs probe reads. The
 * addresses are not taken from it (it has inet_saddr, we report
 * skc_rcv_saddr like every other hook), the rest is the same fields. */
struct trace_event_raw_inet_sock_set_state {
	unsigned long long __pad; /* common tracepoint header (8 bytes) */
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;    /* ntohs(inet_sport) */
	__u16 dport;    /* ntohs(skc_dport) */
	__u16 family;   /* sk_family */
	__u16 protocol; /* sk_protocol */
} __attribute__((preserve_access_index));

/* Which hook emitted an event. */
enum event_hook {
	HOOK_TP_BTF = 1,
	HOOK_TRACEPOINT = 2,
	HOOK_FENTRY = 3,
	HOOK_KPROBE = 4,
};

/* Where a transition ran: a task holding the socket lock (a system call or
 * the owner's backlog processing), or softirq/timer context, where the
 * current task is unrelated to the socket. */
enum event_context {
	CTX_PROCESS = 1,
	CTX_SOFTIRQ = 2,
};

/* How the cookie was obtained. */
enum cookie_source {
	COOKIE_NONE = 0,     /* the kernel had not made one yet */
	COOKIE_HELPER = 1,   /* bpf_get_socket_cookie: makes it if needed */
	COOKIE_FIELD = 2,    /* read from sk_cookie, made earlier */
	COOKIE_DEFERRED = 3, /* held back (by userspace) until the next event of the socket carried it */
};

struct event {
	__u64 ts_ns;      /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 cookie;     /* socket cookie, = sock_diag idiag_cookie */
	__u64 skaddr;     /* kernel address of the socket: unique while it lives */
	__u64 cgroup_id;  /* current task's cgroup v2 id */
	__u32 netns;      /* network namespace inode */
	__u32 pid;        /* current tgid */
	__u32 tid;        /* current thread id */
	__u32 uid;        /* current task's uid */
	__u8 saddr[16];   /* local address: 4 or 16 bytes used by family */
	__u8 daddr[16];   /* peer address */
	__u16 sport;      /* local port, host order */
	__u16 dport;      /* peer port, host order */
	__u16 family;     /* AF_INET or AF_INET6 */
	__u8 oldstate;
	__u8 newstate;
	__u8 context;     /* enum event_context */
	__u8 hook;        /* enum event_hook */
	__u8 cookie_src;  /* enum cookie_source */
	__u8 cpu;         /* CPU the transition ran on (low 8 bits) */
	char comm[16];    /* current task's comm */
	/* At the transition to CLOSE only (zero otherwise): the socket's last
	 * counters, for the connection's history and outcome. */
	__u64 bytes_acked;
	__u64 bytes_received;
	__u32 total_retrans;
	__u32 srtt_us;    /* smoothed RTT in microseconds (already >> 3) */
	__u32 unread;     /* received bytes never read (FIN excluded) */
	__u16 sk_err;     /* pending socket error (errno) */
	__u8 peer_fin;    /* SOCK_DONE: the peer's FIN came */
	__u8 __pad;
};

/* Counters slot numbers in the per-CPU counters map. */
enum counter {
	COUNTER_EVENTS = 0,  /* records submitted */
	COUNTER_LOST = 1,    /* bpf_ringbuf_reserve failed: the event is lost */
	COUNTER_CAUGHT = 2,  /* transitions a catcher took while its main program ran */
	COUNTER_MAX = 3,
};

#endif
