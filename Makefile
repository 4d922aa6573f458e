# schedfs: build, run, test, bench, install.
#   make run    installs what is missing, builds release, mounts on ./mnt and shows mnt/sched
#   make test   installs what is missing, builds, runs every test (needs root and /dev/fuse)
#   make bench  builds release and the references, measures, and writes BENCHMARKS.md
#   make test-asan  every test again under AddressSanitizer and LeakSanitizer
#   make test-tsan  every test again under ThreadSanitizer
#   make soak   minutes at 1000 Hz under readers: pace, RSS and descriptors must stay flat
#   make install    the binary, schedfs(8), bash/zsh/fish completions and a systemd mount unit
#   make man    regenerates Packaging/man/schedfs.8 from the definitions --help prints
#   make docs   the libraries' documentation (DocC), with no warnings
#   make test-embedding  a package outside this one, from the README, built and mounted (in make test)

SWIFT   ?= swift
PREFIX  ?= /usr/local
MNT     ?= mnt
RELEASE := .build/release/schedfs
BENCH   := .build/bench

.PHONY: all deps test-deps build release run stop test test-embedding check-man man docs test-asan test-tsan bench soak install install-files uninstall clean

all: build

# libfuse3's headers and fusermount3, from Debian/Ubuntu, when they are missing.
deps:
	@if ! pkg-config --exists fuse3 2>/dev/null || ! command -v fusermount3 >/dev/null 2>&1; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "schedfs needs libfuse3-dev and fuse3: run 'sudo apt-get install -y libfuse3-dev fuse3 pkg-config'" >&2; exit 1; \
		fi; \
		echo "installing libfuse3-dev fuse3 pkg-config"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfuse3-dev fuse3 pkg-config >/dev/null; \
	fi

build: deps
	$(SWIFT) build

# The Swift runtime is linked in statically: only what schedfs uses is loaded, which keeps
# the daemon's resident memory about 3 MiB smaller than with the shared libraries.
release: deps
	$(SWIFT) build -c release --static-swift-stdlib

run: release
	@mkdir -p $(MNT)
	@if grep -qs " $$(realpath $(MNT)) .* fuse.schedfs " /proc/self/mountinfo; then \
		echo "$(MNT) is already mounted"; \
	else \
		$(RELEASE) $(MNT); \
	fi
	@echo "\$$ cat $(MNT)/sched"; cat $(MNT)/sched
	@sleep 1; echo "\$$ cat $(MNT)/sched   # one second later"; cat $(MNT)/sched
	@echo "schedfs runs in the background; read it again with 'cat $(MNT)/sched', stop it with 'fusermount3 -u $(MNT)'"

stop:
	fusermount3 -u $(MNT)

# What the tests run beside schedfs: the shells whose completions they try, man and groff for
# the man page, systemd's tools for the mount unit, useradd and setpriv for an ordinary user,
# and node_exporter, Prometheus (with promtool) and curl for the fleet tests. The packages'
# own services are not started (policy-rc.d says no while they install): the tests start
# their own, on loopback, and stop them.
TEST_PACKAGES := zsh fish man-db groff-base systemd passwd util-linux prometheus prometheus-node-exporter curl
test-deps:
	@missing=$$(for p in $(TEST_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "the tests need: apt-get install -y $$missing" >&2; exit 1; fi; \
		echo "installing" $$missing; \
		policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' > $$policy; chmod 755 $$policy; \
		fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		status=$$?; if [ -n "$$policy" ]; then rm -f $$policy; fi; exit $$status; \
	fi

# Some tests open /dev/fuse to all users, or make a user (schedfs-tNNNN), for a moment, and
# put it back themselves; should the test process die first, this puts both back after the run.
define run-tests
	@mode=$$(stat -c %a /dev/fuse 2>/dev/null); \
	$(1); status=$$?; \
	if [ -n "$$mode" ]; then chmod "$$mode" /dev/fuse; fi; \
	for user in $$(getent passwd | cut -d: -f1 | grep -x 'schedfs-t[0-9]*'); do userdel "$$user"; done; \
	exit $$status
endef

# The mount tests run the built binary, so build it before the tests.
test: deps test-deps
	$(SWIFT) build
	$(MAKE) check-man
	$(MAKE) docs
	$(call run-tests,$(SWIFT) test --disable-xctest)
	$(MAKE) test-embedding

# The newcomer's path: a package outside this one, made from the README's Package.swift and
# program, depending on this repository by path, built from nothing and mounted; every Swift
# snippet of the libraries' documentation is compiled in it, against the public API alone.
test-embedding: deps
	python3 Tests/Embedding/embed.py $(CURDIR)

# schedfs(8) is made by swift-argument-parser's generate-manual plugin from the definitions
# that --help prints, then finished by Packaging/man/finish-manual.py (it says what it mends).
# check-man, part of `make test`, fails when the committed page is not what they make now.
MANPAGE := Packaging/man/schedfs.8
MANDIR  := .build/manual
define make-manual
	rm -rf $(MANDIR) && mkdir -p $(MANDIR)
	$(SWIFT) package --allow-writing-to-directory $(MANDIR) generate-manual \
		--configuration debug --section 8 --output-directory $(MANDIR) >/dev/null
	python3 Packaging/man/finish-manual.py < $(MANDIR)/schedfs.8 > $(MANDIR)/schedfs.8.finished
endef
man:
	$(make-manual)
	mv $(MANDIR)/schedfs.8.finished $(MANPAGE)
check-man:
	$(make-manual)
	@# The date line says when the page was made, not what it says.
	@if ! diff -u -I '^\.Dd ' $(MANPAGE) $(MANDIR)/schedfs.8.finished; then \
		echo "$(MANPAGE) differs from what --help's definitions make now: run 'make man' and commit it" >&2; \
		exit 1; \
	fi

# The public API of the libraries an embedder links, with the ProcFS article on the kernel's
# caching, as DocC archives in .build/docs; a warning (a broken link, an undocumented
# parameter) fails it, and so `make test`.
DOC_TARGETS := ProcFS ProcFSCore ProcFSMetrics
docs:
	@mkdir -p .build/docs; for target in $(DOC_TARGETS); do \
		$(SWIFT) package --allow-writing-to-directory .build/docs generate-documentation --target $$target \
			--warnings-as-errors --output-path .build/docs/$$target.doccarchive >/dev/null || exit 1; \
		echo "documentation of $$target: .build/docs/$$target.doccarchive"; \
	done

# A benchmark, not a test: speed is measured here, never asserted in `make test`.
bench: release
	@command -v cyclictest >/dev/null 2>&1 || { echo "installing rt-tests (cyclictest)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rt-tests >/dev/null; }
	@command -v prometheus-node-exporter >/dev/null 2>&1 || $(MAKE) --no-print-directory test-deps
	@mkdir -p $(BENCH)
	cc -O2 -Wall -o $(BENCH)/loadgen Benchmarks/loadgen.c -lpthread
	cc -O2 -Wall $$(pkg-config --cflags fuse3) -o $(BENCH)/refserver Benchmarks/refserver.c $$(pkg-config --libs fuse3)
	cc -O2 -Wall -o $(BENCH)/idletick Benchmarks/idletick.c
	cc -O2 -Wall -o $(BENCH)/pollwake Benchmarks/pollwake.c
	python3 Benchmarks/bench.py $(RELEASE) $(BENCH)/loadgen $(BENCH)/refserver $(BENCH)/idletick $(BENCH)/pollwake \
		.build/release/procfs-scale BENCHMARKS.md

# The whole suite under AddressSanitizer and LeakSanitizer, the daemon under test included:
# a memory error or a leak at the daemon's exit fails the run.
test-asan: deps test-deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	$(call run-tests,SCHEDFS_BIN=$(CURDIR)/.build-asan/debug/schedfs $(SWIFT) test --disable-xctest --sanitize=address --scratch-path .build-asan)

# The whole suite under ThreadSanitizer, the daemon under test included: a race reported in
# the test process or in a daemon (which then exits 66) fails the run. MutexAnnotations.c tells
# TSan about the contended paths of Swift's Mutex, which it cannot see (the file says why); it
# is built with the Swift toolchain's clang, which knows the Swift calling convention.
SWIFT_CLANG ?= $(dir $(realpath $(shell command -v $(SWIFT))))clang
TSAN        := .build-tsan
TSAN_LINK   := -Xlinker $(CURDIR)/$(TSAN)/MutexAnnotations.o
test-tsan: deps test-deps
	@mkdir -p $(TSAN)
	$(SWIFT_CLANG) -c -O1 -fPIC -Wall Tests/TSan/MutexAnnotations.c -o $(TSAN)/MutexAnnotations.o
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path $(TSAN) $(TSAN_LINK)
	$(call run-tests,SCHEDFS_BIN=$(CURDIR)/$(TSAN)/debug/schedfs $(SWIFT) test --disable-xctest --sanitize=thread --scratch-path $(TSAN) $(TSAN_LINK))

# Not part of `make test`: it runs for SOAK_SECONDS (default 300).
SOAK_SECONDS ?= 300
soak: release
	@mkdir -p $(BENCH)
	cc -O2 -Wall -o $(BENCH)/loadgen Benchmarks/loadgen.c -lpthread
	python3 Benchmarks/soak.py $(RELEASE) $(BENCH)/loadgen $(SOAK_SECONDS)

# `make install` builds release and installs it; install-files installs a binary already
# built (BIN), which is how the tests install the debug build into a temporary DESTDIR.
# The completions are written by the binary itself (swift-argument-parser), so they always
# match it. mount(8) finds `schedfs` for fstab and mount units only in its fixed PATH, which
# has /usr/local/bin and /usr/bin.
BIN        ?= $(RELEASE)
BINDIR     := $(DESTDIR)$(PREFIX)/bin
MAN8DIR    := $(DESTDIR)$(PREFIX)/share/man/man8
BASHDIR    := $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR     := $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR    := $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
UNITDIR    := $(DESTDIR)$(PREFIX)/lib/systemd/system
INSTALLED  := $(BINDIR)/schedfs $(MAN8DIR)/schedfs.8 $(BASHDIR)/schedfs $(ZSHDIR)/_schedfs \
	$(FISHDIR)/schedfs.fish $(UNITDIR)/mnt-sched.mount

install: release
	$(MAKE) install-files

install-files:
	install -D -m 0755 $(BIN) $(BINDIR)/schedfs
	install -D -m 0644 $(MANPAGE) $(MAN8DIR)/schedfs.8
	$(BIN) --generate-completion-script bash > .build/completion.bash && install -D -m 0644 .build/completion.bash $(BASHDIR)/schedfs
	$(BIN) --generate-completion-script zsh > .build/completion.zsh && install -D -m 0644 .build/completion.zsh $(ZSHDIR)/_schedfs
	$(BIN) --generate-completion-script fish > .build/completion.fish && install -D -m 0644 .build/completion.fish $(FISHDIR)/schedfs.fish
	rm -f .build/completion.bash .build/completion.zsh .build/completion.fish
	install -D -m 0644 Packaging/systemd/mnt-sched.mount $(UNITDIR)/mnt-sched.mount

# A unit that was enabled (systemctl enable --now) is disabled and its mount stopped first.
uninstall:
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null 2>&1 \
		&& systemctl is-enabled --quiet mnt-sched.mount 2>/dev/null; then \
		systemctl disable --now mnt-sched.mount; \
	fi
	rm -f $(INSTALLED)

clean:
	rm -rf .build
