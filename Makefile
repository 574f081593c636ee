# sstrace — see README.md. Every target installs what it needs itself.
GO ?= go
export GOFLAGS ?= -buildvcs=false

.PHONY: all build install generate deps-generate deps-test test test-unit fuzz bench bench-trace bench-ss bench-daemon vmtest clean

all: build

build:
	# Static: no libc at run time, the same binary the VM matrix boots.
	# The VCS revision goes into `sstrace version` (auto: none outside a checkout).
	CGO_ENABLED=0 GOFLAGS=-buildvcs=auto $(GO) build -o bin/sstrace ./cmd/sstrace

# Building and shipping: man pages, release binaries, the container image.
.PHONY: man release image

# Man pages, one per command (sstrace(8), sstrace-ss(8), ...), from the
# cobra commands' own help: built by a binary with the hidden `man` command
# (-tags mangen), which the installed binary does not carry (cmd/sstrace/man.go).
man:
	rm -rf bin/man
	$(GO) run -tags mangen ./cmd/sstrace man bin/man

# Release binaries: static (no libc), for amd64 and arm64, with SHA256SUMS
# (check: cd dist && sha256sum -c SHA256SUMS). Built from a clone, they
# carry the VCS revision and a pseudo-version that `sstrace version` prints
# (Go does not stamp builds from a git worktree). -trimpath: no build
# paths; -s -w: no symbol table or DWARF (a third of the size; panics still
# name functions).
DIST ?= dist
RELEASE_ARCHES = amd64 arm64
release:
	rm -rf $(DIST) && mkdir -p $(DIST)
	for arch in $(RELEASE_ARCHES); do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOFLAGS=-buildvcs=auto \
	    $(GO) build -trimpath -ldflags='-s -w' -o $(DIST)/sstrace-linux-$$arch ./cmd/sstrace || exit 1; \
	done
	cd $(DIST) && sha256sum sstrace-linux-* > SHA256SUMS

# The container image (deploy/container/Containerfile): FROM scratch with the
# release binary of IMAGE_ARCH (amd64 or arm64); buildah builds it offline.
IMAGE ?= localhost/sstrace:latest
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
image: release
	buildah bud --platform linux/$(IMAGE_ARCH) -f deploy/container/Containerfile -t $(IMAGE) $(DIST)

# What the deploy tests need besides deps-test's (an extra prerequisite of
# deps-test, kept apart): man and groff render the man pages (TestInstall);
# buildah builds the image, podman with runc runs it (TestContainerImage;
# runc, not crun, which refuses hybrid cgroup hosts).
.PHONY: deps-deploy
deps-test: deps-deploy
deps-deploy:
	@command -v man >/dev/null && command -v groff >/dev/null && command -v buildah >/dev/null && \
	  command -v podman >/dev/null && command -v runc >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq man-db groff-base buildah podman runc >/dev/null)

# Install the binary, the man pages, the systemd unit and bash completion
# (PREFIX, DESTDIR as usual). Then: systemctl daemon-reload; systemctl
# enable --now sstrace.
PREFIX ?= /usr/local
install: build man
	install -d $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 0644 bin/man/*.8 $(DESTDIR)$(PREFIX)/share/man/man8/
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
# filter bytecode, read off its sendmsg), tmux (sstrace top, driven as a
# person would: keys in, capture-pane out).
deps-test:
	@command -v ss >/dev/null && command -v ip >/dev/null && command -v gcc >/dev/null && test -f /usr/include/stdlib.h && \
	  command -v systemd-analyze >/dev/null && command -v setpriv >/dev/null && command -v strace >/dev/null && command -v tmux >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 gcc libc6-dev systemd util-linux strace tmux >/dev/null)

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
	# The DaemonSet manifest's test: a module of its own (k8s.io stays out of sstrace's).
	cd deploy/kubernetes && $(GO) vet ./... && $(GO) test -count=1 ./...

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
