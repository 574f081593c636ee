/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * procs.h: the few kernel types bpf/procs.bpf.c reads, declared with
 * preserve_access_index so clang emits CO-RE relocations and libbpf/cilium
 * ebpf fix every offset against the running kernel's BTF at load time. Only
 * the fields the program touches are listed; their order and the absence of
 * the others do not matter, the names and types do.
 */
#ifndef SSTRACE_PROCS_H
#define SSTRACE_PROCS_H

#include <linux/types.h>

/* The kernel spells it u32 in struct bpf_iter__task_file. */
typedef __u32 u32;

/* SOCKFS_MAGIC (include/uapi/linux/magic.h): the superblock of the pseudo
 * filesystem every socket file lives on. */
#define SSTRACE_SOCKFS_MAGIC 0x534F434B
/* S_IFMT/S_IFSOCK (include/uapi/linux/stat.h), spelled out because the
 * libc header would drag userspace types into a BPF build. */
#define SSTRACE_S_IFMT 00170000
#define SSTRACE_S_IFSOCK 0140000

/* Opaque: only passed back to bpf_seq_write. */
struct seq_file;

/* The iterator's per-call metadata; seq is the output stream. */
struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct super_block {
	unsigned long s_magic; /* tells sockfs inodes from filesystem ones */
} __attribute__((preserve_access_index));

struct inode {
	unsigned short i_mode;  /* S_IFSOCK: the file is a socket */
	unsigned long i_ino;    /* the N of "socket:[N]" in /proc/PID/fd */
	struct super_block *i_sb; /* which filesystem the inode belongs to */
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode; /* the socket's inode, as fstat sees it */
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;        /* thread id: only the group leader is reported */
	int tgid;       /* process id, the pid= that ss prints */
	char comm[16];  /* TASK_COMM_LEN; the name ss reads from /proc/PID/stat */
} __attribute__((preserve_access_index));

/* Context of an iter/task_file program: called once per open file of every
 * task, and once more with file == NULL at the end. */
struct bpf_iter__task_file {
	union {
		struct bpf_iter_meta *meta;
	};
	union {
		struct task_struct *task;
	};
	u32 fd;
	union {
		struct file *file;
	};
} __attribute__((preserve_access_index));

#endif /* SSTRACE_PROCS_H */
