# sstrace — see README.md. Every target installs what it needs itself.
GO ?= go
export GOFLAGS ?= -buildvcs=false

.PHONY: all build install generate deps-generate deps-test test test-unit fuzz bench bench-trace bench-ss bench-daemon vmtest clean

all: build

build:
	# Static: no libc at run time, the same binary the VM matrix boots.
	# The VCS revision goes into `sstrace version` (auto: none outside a checkout).
	CGO_ENABLED=0 GOFLAGS=-buildvcs=auto $(GO) build -o bin/sstrace ./cmd/sstrace

# Install the binary, the systemd unit and bash completion (PREFIX,
# DESTDIR as usual). Then: systemctl daemon-reload; systemctl enable --now
# sstrace.
PREFIX ?= /usr/local
install: build
	install -D -m 0755 bin/sstrace $(DESTDIR)$(PREFIX)/bin/sstrace
	install -D -m 0644 deploy/systemd/sstrace.service $(DESTDIR)/etc/systemd/system/sstrace.service
	sed -i 's#/usr/local/bin/sstrace#$(PREFIX)/bin/sstrace#' $(DESTDIR)/etc/systemd/system/sstrace.service
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	bin/sstrace completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/sstrace

# Rebuild the committed BPF objects. The libbpf headers they include are
# vendored (headers/bpf, libbpf 1.1.2), so only clang and the kernel's uapi
# headers (linux-libc-dev) come from the machine; the objects are
# reproduced byte for byte with the clang they were built with.
CLANG_MAJOR = 14
deps-generate:
	@command -v clang >/dev/null && test -f /usr/include/linux/bpf.h || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang llvm linux-libc-dev >/dev/null)
	@v=$$(clang -dumpversion | cut -d. -f1); [ "$$v" = "$(CLANG_MAJOR)" ] || \
	  echo "make generate: warning: clang $$v, the committed objects were built with clang $(CLANG_MAJOR): they will differ" >&2

generate: deps-generate
	$(GO) generate ./...

# What the tests run besides Go: the real ss and ip (parity, namespaces),
# a C compiler for the race detector (cgo), systemd-analyze and setpriv (the
# unit in deploy/systemd, run with only its capabilities), strace (ss's
# filter bytecode, read off its sendmsg).
deps-test:
	@command -v ss >/dev/null && command -v ip >/dev/null && command -v gcc >/dev/null && test -f /usr/include/stdlib.h && \
	  command -v systemd-analyze >/dev/null && command -v setpriv >/dev/null && command -v strace >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 gcc libc6-dev systemd util-linux strace >/dev/null)

# The whole test suite: unit tests, parity tests against the real ss, fuzz
# seed corpora and the privileged end-to-end tests (as root; under CI=true a
# privileged test that cannot run fails instead of skipping).
#
# Every package runs under the race detector but pkg/keeper and pkg/procs:
# their end-to-end churn takes 40 s and 14 s under -race against 3 s and
# 1 s without, and both are race-clean when run alone.
RACE_SKIP = -e '/pkg/keeper$$' -e '/pkg/procs$$'
test: deps-test
	$(GO) vet ./... ./.ci/vmtest/...
	# arm64: its own BPF object (the kprobe fallback reads arm64 registers).
	GOARCH=arm64 CGO_ENABLED=0 $(GO) build ./... && GOARCH=arm64 $(GO) vet ./...
	$(GO) test -race -count=1 -timeout 12m $$($(GO) list ./... ./.ci/vmtest/... | grep -v $(RACE_SKIP))
	$(GO) test -count=1 -timeout 12m ./pkg/keeper ./pkg/procs

# Unprivileged unit tests only (the privileged ones skip outside CI).
test-unit:
	$(GO) test -count=1 -short ./...

FUZZTIME ?= 60s
fuzz:
	$(GO) test ./pkg/filter -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)

bench: bench-trace bench-ss bench-daemon

bench-trace:
	bash .ci/bench-trace.sh

bench-ss:
	bash .ci/bench-ss.sh

# The daemon: seed time, memory, ss --socket against ss, churn cost,
# history over a million retained connections (docs/BENCHMARKS.md).
bench-daemon:
	bash .ci/bench-daemon.sh

# VMTEST_FLAGS go to the runner, e.g. VMTEST_FLAGS="-arches amd64" or
# "-kernels 6.12-arm64" (bash .ci/vmtest/run.sh -h lists them).
vmtest:
	bash .ci/vmtest/run.sh $(VMTEST_FLAGS)

clean:
	rm -rf bin
