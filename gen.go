// Package sstrace is the module root. It holds no code, only the go
// generate directives that compile the BPF programs in bpf/ with bpf2go
// into the Go packages that load them. The generated *_bpfel.go and
// *_bpfel.o files are committed, so building sstrace needs no clang;
// `make generate` rebuilds them (it installs clang and libbpf-dev first).
package sstrace

// The tracer: state-transition programs and their ring buffer, one object
// per architecture (the kprobe fallback reads the architecture's registers;
// bpf2go defines __TARGET_ARCH_x86 or _arm64). -type event
// makes bpf2go emit the Go twin of struct event, so C and Go cannot disagree
// on its layout.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I${PWD}/headers -I/usr/include/x86_64-linux-gnu" -target amd64,arm64 -type event -type event_hook -type event_context -type cookie_source -type counter -go-package tracer -output-dir pkg/tracer Tracer bpf/tracer.bpf.c

// Process attribution: an iter/task_file program that reports every
// (pid, fd, socket inode) in one pass.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I${PWD}/headers -I/usr/include/x86_64-linux-gnu" -target bpfel -type sock_file -go-package procs -output-dir pkg/procs Procs bpf/procs.bpf.c
