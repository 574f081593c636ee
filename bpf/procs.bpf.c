//go:build ignore

/*
 * procs.bpf.c: process attribution for `sstrace ss -p` in one pass.
 *
 * An iter/task_file program runs once for every open file of every task.
 * For each file that is a socket it writes one fixed-size struct sock_file
 * (pid, fd, socket inode, comm) to the iterator's seq_file; the Go side
 * (pkg/procs) reads the stream with read(2) on the iterator fd. This replaces
 * the readdir + readlink of every /proc/PID/fd/N that `ss -p` does.
 *
 * Build: go generate (see gen.go); the result is pkg/procs/procs_bpfel.{go,o}.
 */
#include "procs.h"

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* One socket file descriptor. The layout is the wire format between the
 * program and Go; bpf2go derives the Go twin from it (-type sock_file). */
struct sock_file {
	__u64 ino;     /* socket inode, as "socket:[ino]" in /proc */
	__u32 pid;     /* thread-group id (process id) */
	__u32 fd;      /* descriptor number in that process */
	char comm[16]; /* the group leader's comm, NUL-padded */
};

/* A local variable's type does not reach BTF; this declaration puts struct
 * sock_file there so bpf2go -type sock_file can generate the Go twin. */
const struct sock_file *unused_sock_file __attribute__((unused));

SEC("iter/task_file")
int dump_sock_files(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct sock_file rec = {};
	struct inode *inode;

	/* The final call of a session has no task and no file. */
	if (!task || !file)
		return 0;
	/*
	 * ss lists /proc/PID/fd for process ids only, and that directory is
	 * the group leader's descriptor table. The kernel already skips
	 * threads that share the leader's table; a thread that unshared its
	 * table (or whose leader has exited) is invisible to ss too.
	 *
	 * task and file are BTF pointers: plain dereferences compile to
	 * inline, fault-safe loads (CO-RE-relocated through the header's
	 * preserve_access_index) instead of a bpf_probe_read_kernel call per
	 * field; on this path, which runs for every open file, that cut the
	 * kernel time of a 144k-socket pass by about a fifth.
	 */
	if (task->pid != task->tgid)
		return 0;

	inode = file->f_inode;
	if (!inode)
		return 0;
	/*
	 * S_IFSOCK alone is not enough: an O_PATH descriptor on a bound UNIX
	 * socket's filesystem node has that mode too, but /proc shows its path,
	 * not "socket:[N]". Socket files are exactly the sockfs inodes.
	 */
	if ((inode->i_mode & SSTRACE_S_IFMT) != SSTRACE_S_IFSOCK)
		return 0;
	if (inode->i_sb->s_magic != SSTRACE_SOCKFS_MAGIC)
		return 0;

	rec.ino = inode->i_ino;
	rec.pid = task->tgid;
	rec.fd = ctx->fd;
	__builtin_memcpy(rec.comm, task->comm, sizeof(rec.comm));

	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}
