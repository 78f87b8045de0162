# resild: one non-recursive Makefile.  `make` builds the daemon, the CLI and
# the client library; `make test` installs missing Debian packages, builds and
# runs every test; `make asan` does the same under ASan+UBSan in build/asan.

BUILD    ?= build
CC       ?= cc
PREFIX   ?= /usr/local
DESTDIR  ?=
VERSION  := 0.1.0
SOVERSION := 0
# Install locations (make install / uninstall); DESTDIR is prepended to
# each, never written into a file.  The configuration lives in /etc
# whatever PREFIX is (the unit and resild's defaults name it).
BINDIR       ?= $(PREFIX)/bin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DOCDIR       ?= $(PREFIX)/share/doc/resild
SYSCONFDIR   ?= /etc
UNITDIR      ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR  ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR  ?= $(PREFIX)/lib/tmpfiles.d

PKGS     := libuv jansson msgpack hiredis
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
            -Wmissing-prototypes -Wno-missing-field-initializers
OPT      ?= -O2 -g
CFLAGS   ?=
CFLAGS   += -std=c11 $(OPT) $(WARN) -D_GNU_SOURCE -DRESIL_VERSION='"$(VERSION)"' \
            -fPIC -Iproto -Iclient -Idaemon $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

ifeq ($(SAN),1)
CFLAGS  += $(SAN_FLAGS)
LDFLAGS += $(SAN_FLAGS)
endif

PROTO_SRC  := proto/scan.c proto/rpc.c proto/sockpath.c
DAEMON_CORE := daemon/breaker.c daemon/limiter.c daemon/bulkhead.c \
               daemon/retry.c daemon/config.c daemon/keys.c daemon/log.c \
               daemon/permit.c daemon/msgidx.c daemon/error.c \
               daemon/admit.c daemon/core.c daemon/event.c daemon/evlog.c \
               daemon/methods.c daemon/metrics.c daemon/prom.c daemon/memory.c \
               daemon/heartbeat.c daemon/analytics.c daemon/alerts.c \
               daemon/snapfile.c
DAEMON_SRC := $(DAEMON_CORE) daemon/server.c daemon/http.c daemon/sdnotify.c \
              daemon/errlog.c daemon/hooks.c daemon/snapshot.c daemon/redis.c \
              daemon/rlink.c daemon/main.c
CLIENT_SRC := client/resil.c
CTL_SRC    := client/resilctl.c

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

UNIT_TESTS := test_scan test_rpc test_breaker test_breaker_model test_limiter \
              test_heartbeat \
              test_retry test_admit test_config test_keys test_permit \
              test_alloc test_corpus test_core test_prom test_http \
              test_sdnotify test_errlog test_analytics test_snapshot \
              test_shared test_totals
INTEG_TESTS := test_integ test_integ_breaker test_integ_admit test_flood \
              test_abuse test_integ_errlog test_integ_snapshot test_rlink
CLIENT_TESTS := test_client_matrix test_client_args test_client_timeout \
                test_client_ctl test_review test_client_events test_ctl_health
TEST_BINS  := $(addprefix $(BUILD)/tests/,$(UNIT_TESTS) $(INTEG_TESTS) \
                $(CLIENT_TESTS))

.PHONY: all deps run test check bench bench-more bench-analytics bench-snapshot bench-scale fuzz \
        fuzz-merge asan install uninstall format clean
all: $(BUILD)/resild $(BUILD)/resilctl $(BUILD)/libresil.a $(BUILD)/libresil.so

deps:
	@sh scripts/deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/resild: $(call obj,$(PROTO_SRC) $(DAEMON_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libresil.a: $(call obj,$(PROTO_SRC) $(CLIENT_SRC))
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libresil.so: $(call obj,$(PROTO_SRC) $(CLIENT_SRC))
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libresil.so.$(SOVERSION) -o $@ $^ $(LDLIBS) -lpthread

# resilctl top draws with ncurses (wide-character build, from Debian's
# libncurses-dev): terminfo knows each terminal's sequences.
CTL_LIBS := $(shell pkg-config --libs ncursesw 2>/dev/null || echo -lncursesw)
$(BUILD)/resilctl: $(call obj,$(CTL_SRC)) $(BUILD)/libresil.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CTL_LIBS) -lpthread

# Unit tests link the pure modules directly; the integration test links
# libresil and drives a real daemon.
$(BUILD)/tests/test_scan: $(call obj,tests/test_scan.c $(PROTO_SRC))
$(BUILD)/tests/test_rpc: $(call obj,tests/test_rpc.c $(PROTO_SRC))
$(BUILD)/tests/test_breaker: $(call obj,tests/test_breaker.c daemon/breaker.c)
$(BUILD)/tests/test_breaker_model: $(call obj,tests/test_breaker_model.c daemon/breaker.c)
$(BUILD)/tests/test_limiter: $(call obj,tests/test_limiter.c daemon/limiter.c)
$(BUILD)/tests/test_heartbeat: $(call obj,tests/test_heartbeat.c daemon/heartbeat.c)
$(BUILD)/tests/test_retry: $(call obj,tests/test_retry.c daemon/retry.c)
$(BUILD)/tests/test_admit: $(call obj,tests/test_admit.c $(PROTO_SRC) $(DAEMON_CORE))
$(BUILD)/tests/test_config: $(call obj,tests/test_config.c $(PROTO_SRC) $(DAEMON_CORE))
$(BUILD)/tests/test_keys: $(call obj,tests/test_keys.c $(PROTO_SRC) $(DAEMON_CORE))
$(BUILD)/tests/test_core: $(call obj,tests/test_core.c $(PROTO_SRC) $(DAEMON_CORE))
$(BUILD)/tests/test_shared: $(call obj,tests/test_shared.c $(PROTO_SRC) $(DAEMON_CORE))
$(BUILD)/tests/test_totals: $(call obj,tests/test_totals.c $(PROTO_SRC) $(DAEMON_CORE))
$(BUILD)/tests/test_snapshot: $(call obj,tests/test_snapshot.c $(PROTO_SRC) $(DAEMON_CORE) daemon/snapshot.c)
$(BUILD)/tests/test_permit: $(call obj,tests/test_permit.c daemon/permit.c daemon/msgidx.c)
$(BUILD)/tests/test_analytics: $(call obj,tests/test_analytics.c $(PROTO_SRC) $(DAEMON_CORE))
$(BUILD)/tests/test_prom: $(call obj,tests/test_prom.c daemon/prom.c)
$(BUILD)/tests/test_http: $(call obj,tests/test_http.c daemon/http.c daemon/prom.c)
$(BUILD)/tests/test_sdnotify: $(call obj,tests/test_sdnotify.c daemon/sdnotify.c daemon/log.c)
# The error log on a real loop and thread pool under a fake wall clock.
$(BUILD)/tests/test_errlog: $(call obj,tests/test_errlog.c daemon/errlog.c $(PROTO_SRC) $(DAEMON_CORE))
# Every allocation of the daemon's own objects goes through the test's
# failing allocator.
$(BUILD)/tests/test_alloc: LDFLAGS += -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
$(BUILD)/tests/test_alloc: $(call obj,tests/test_alloc.c $(PROTO_SRC) $(DAEMON_CORE))
# test_corpus replays tests/corpus through fuzz_dispatch.c's entry point.
$(BUILD)/tests/test_corpus: $(call obj,tests/test_corpus.c tests/fuzz_dispatch.c $(PROTO_SRC) $(DAEMON_CORE))
$(BUILD)/tests/test_integ: $(call obj,tests/test_integ.c tests/daemon_util.c tests/integ_util.c) $(BUILD)/libresil.a
$(BUILD)/tests/test_integ_breaker: $(call obj,tests/test_integ_breaker.c tests/daemon_util.c tests/integ_util.c) $(BUILD)/libresil.a
$(BUILD)/tests/test_integ_admit: $(call obj,tests/test_integ_admit.c tests/daemon_util.c tests/integ_util.c) $(BUILD)/libresil.a
$(BUILD)/tests/test_integ_snapshot: $(call obj,tests/test_integ_snapshot.c tests/daemon_util.c tests/integ_util.c) $(BUILD)/libresil.a
# libresil and resilctl against scripted fake peers (tests/fake_peer.c)
# and a real daemon.
CLIENT_TEST_UTIL := tests/fake_peer.c tests/daemon_util.c tests/integ_util.c
$(BUILD)/tests/test_client_matrix: $(call obj,tests/test_client_matrix.c $(CLIENT_TEST_UTIL)) $(BUILD)/libresil.a
$(BUILD)/tests/test_client_args: $(call obj,tests/test_client_args.c $(CLIENT_TEST_UTIL)) $(BUILD)/libresil.a
$(BUILD)/tests/test_client_timeout: $(call obj,tests/test_client_timeout.c $(CLIENT_TEST_UTIL)) $(BUILD)/libresil.a
$(BUILD)/tests/test_client_ctl: $(call obj,tests/test_client_ctl.c $(CLIENT_TEST_UTIL)) $(BUILD)/libresil.a
$(BUILD)/tests/test_review: $(call obj,tests/test_review.c tests/daemon_util.c tests/integ_util.c) $(BUILD)/libresil.a
$(BUILD)/tests/test_client_events: $(call obj,tests/test_client_events.c $(CLIENT_TEST_UTIL)) $(BUILD)/libresil.a
$(BUILD)/tests/test_ctl_health: $(call obj,tests/test_ctl_health.c $(CLIENT_TEST_UTIL)) $(BUILD)/libresil.a
$(BUILD)/tests/test_integ_errlog: $(call obj,tests/test_integ_errlog.c tests/daemon_util.c tests/integ_util.c) $(BUILD)/libresil.a
$(BUILD)/tests/test_abuse: $(call obj,tests/test_abuse.c tests/daemon_util.c tests/integ_util.c) $(BUILD)/libresil.a
# rlink against real redis-server processes and fake servers.
$(BUILD)/tests/test_rlink: $(call obj,tests/test_rlink.c daemon/rlink.c daemon/log.c daemon/error.c tests/daemon_util.c)
$(BUILD)/tests/test_flood: $(call obj,tests/test_flood.c tests/flood_util.c tests/daemon_util.c tests/integ_util.c) $(BUILD)/libresil.a
$(BUILD)/tests/bench_analytics: $(call obj,tests/bench_analytics.c daemon/analytics.c)
$(BUILD)/tests/bench_snapshot: $(call obj,tests/bench_snapshot.c $(PROTO_SRC) $(DAEMON_CORE) daemon/snapshot.c)
$(BUILD)/tests/bench_scale: $(call obj,tests/bench_scale.c $(PROTO_SRC) $(DAEMON_CORE) daemon/snapshot.c)
$(BUILD)/tests/bench: $(call obj,tests/bench.c tests/flood_util.c tests/daemon_util.c) $(BUILD)/libresil.a
$(BUILD)/tests/loadgen: $(call obj,tests/loadgen.c)
$(BUILD)/tests/%:
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lpthread

# check: build and run every test without touching the package set.
check: all $(TEST_BINS)
	@BUILD=$(BUILD) sh tests/run.sh

# bench: issue 14's one table (tests/bench_table.py): resild's decisions
# beside Redis INCR, a GCRA script in Redis and a bare socket echo at three
# concurrency settings through one load generator (tests/loadgen.c), then
# libresil pinned to one CPU (tests/bench.c), RSS at 100k and 1M keys
# beside Redis hashes, snapshot write and restore (tests/bench_snapshot.c)
# and callgrind instructions per decision; about 2 minutes.  Printed, never
# asserted: it fails only when something broke.
BENCH_BINS := $(BUILD)/tests/loadgen $(BUILD)/tests/bench $(BUILD)/tests/bench_snapshot
bench: all $(BENCH_BINS)
	@BUILD=$(BUILD) /usr/bin/python3 tests/bench_table.py

# bench-more: the earlier benches: tests/bench.c unpinned with its
# connect/close flood, the Python client, and decisions with Redis healthy,
# slow and stopped (tests/bench_redis.py).  BENCH_N=... sets bench.c's count.
bench-more: all $(BUILD)/tests/bench
	@BUILD=$(BUILD) $(BUILD)/tests/bench
	@echo; echo "Python client (client/python/bench.py), same machine, same run:"
	@BUILD=$(BUILD) /usr/bin/python3 client/python/bench.py
	@echo; echo "Redis healthy, slow and stopped (tests/bench_redis.py), same run:"
	@BUILD=$(BUILD) /usr/bin/python3 tests/bench_redis.py

# analytics: its correlation loops are written to vectorise (-O3).
$(BUILD)/obj/daemon/analytics.o: CFLAGS += -O3

# bench-analytics: error analytics memory and `errors` call time (issue 11),
# the pure module under a fake clock; printed, never asserted.
bench-analytics: $(BUILD)/tests/bench_analytics
	@$(BUILD)/tests/bench_analytics
# bench-snapshot: snapshot write and restore time and size for 100k and 1M
# keys (tests/bench_snapshot.c), printed, never asserted.
bench-snapshot: $(BUILD)/tests/bench_snapshot
	@$(BUILD)/tests/bench_snapshot
# bench-scale: the core's cost per operation against 10k, 100k and 1M keys,
# callers and parked requests (tests/bench_scale.c, issue 14), printed,
# never asserted.
bench-scale: $(BUILD)/tests/bench_scale
	@$(BUILD)/tests/bench_scale

# fuzz: libFuzzer (clang) over scanner, decoder and every method with ASan
# and UBSan, seeded from tests/corpus; FUZZ_SECONDS=N (default 60).  New
# inputs go to build/fuzz/corpus, crashes and hangs to build/fuzz/.  Not
# part of make test: `make test` replays tests/corpus with gcc instead
# (test_corpus).  fuzz-merge folds build/fuzz/corpus into a minimised
# tests/corpus, keeping every hand-written seed-* (tests/corpus_seeds.py)
# and every crash-* / timeout-* file ever found.
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -max_len=4096 -timeout=10 -rss_limit_mb=2048
$(BUILD)/fuzz/fuzz_dispatch: tests/fuzz_dispatch.c $(PROTO_SRC) $(DAEMON_CORE)
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE \
	    -DRESIL_VERSION='"$(VERSION)"' -Iproto -Idaemon -Iclient \
	    $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -o $@ $^ \
	    $(shell pkg-config --libs jansson msgpack)
fuzz: $(BUILD)/fuzz/fuzz_dispatch
	@mkdir -p $(BUILD)/fuzz/corpus
	$(BUILD)/fuzz/fuzz_dispatch -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) \
	    -artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/fuzz/corpus tests/corpus
fuzz-merge: $(BUILD)/fuzz/fuzz_dispatch
	@rm -rf $(BUILD)/fuzz/merged && mkdir -p $(BUILD)/fuzz/merged $(BUILD)/fuzz/corpus
	cp tests/corpus/seed-* $(BUILD)/fuzz/merged/
	for f in tests/corpus/crash-* tests/corpus/timeout-*; do \
	    if [ -f "$$f" ]; then cp "$$f" $(BUILD)/fuzz/merged/; fi; done
	$(BUILD)/fuzz/fuzz_dispatch -merge=1 -use_counters=0 $(FUZZ_FLAGS) \
	    $(BUILD)/fuzz/merged \
	    tests/corpus $(BUILD)/fuzz/corpus
	rm -rf tests/corpus && mv $(BUILD)/fuzz/merged tests/corpus
	@echo "tests/corpus: $$(ls tests/corpus | wc -l) files"

test: deps
	@$(MAKE) --no-print-directory check

asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 OPT='-O1 -g' check

run: deps
	@$(MAKE) --no-print-directory all
	exec $(BUILD)/resild

# The Python package resil goes where Debian's python3 looks: dist-packages
# of /usr/lib/python3 for PREFIX=/usr, of /usr/local/lib/python3.X else.
PYTHON_SITE ?= $(PREFIX)/lib/python3$(if $(filter /usr,$(PREFIX)),,.$(shell \
    /usr/bin/python3 -c 'import sys; print(sys.version_info[1])' \
    2>/dev/null || echo 11))/dist-packages
# install: binaries, libresil (static, and shared with its soname links),
# resil.h, resil.pc, the systemd units with every /usr/local/ path
# rewritten for PREFIX (and /etc/resild/ for SYSCONFDIR), the sysusers and
# tmpfiles entries, the README and the example configuration.  An existing
# $(SYSCONFDIR)/resild/config.json is never overwritten.  Run as root
# without DESTDIR, then follow the README's "systemd" steps.
# uninstall removes exactly that; the configuration only when it is still
# the unmodified example.
SO_FULL  := libresil.so.$(VERSION)
UNIT_SED := sed -e 's|/usr/local/|$(PREFIX)/|g' \
                -e 's|/etc/resild/|$(SYSCONFDIR)/resild/|g'
CONF     := $(DESTDIR)$(SYSCONFDIR)/resild/config.json

$(BUILD)/resil.pc: Makefile
	@mkdir -p $(dir $@)
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' \
	    'includedir=$(INCLUDEDIR)' '' 'Name: resil' \
	    'Description: client library of resild, the resilience sidecar daemon' \
	    'URL: file://$(DOCDIR)/README.md' 'Version: $(VERSION)' \
	    'Requires.private: msgpack' 'Libs: -L$${libdir} -lresil' \
	    'Libs.private: -lpthread' 'Cflags: -I$${includedir}' > $@

install: all $(BUILD)/resil.pc
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) \
	    $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	    $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	    $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(SYSCONFDIR)/resild
	install -m 0755 $(BUILD)/resild $(BUILD)/resilctl $(DESTDIR)$(BINDIR)/
	install -m 0644 $(BUILD)/libresil.a $(DESTDIR)$(LIBDIR)/
	install -m 0755 $(BUILD)/libresil.so $(DESTDIR)$(LIBDIR)/$(SO_FULL)
	ln -sf $(SO_FULL) $(DESTDIR)$(LIBDIR)/libresil.so.$(SOVERSION)
	ln -sf libresil.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libresil.so
	install -m 0644 client/resil.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 0644 $(BUILD)/resil.pc $(DESTDIR)$(PKGCONFIGDIR)/
	install -m 0644 README.md systemd/config.example.json systemd/redis-tcp.conf \
	    $(DESTDIR)$(DOCDIR)/
	$(UNIT_SED) systemd/resild.service > $(DESTDIR)$(UNITDIR)/resild.service
	$(UNIT_SED) systemd/resild.socket > $(DESTDIR)$(UNITDIR)/resild.socket
	chmod 0644 $(DESTDIR)$(UNITDIR)/resild.service $(DESTDIR)$(UNITDIR)/resild.socket
	install -m 0644 systemd/resild.sysusers $(DESTDIR)$(SYSUSERSDIR)/resild.conf
	install -m 0644 systemd/resild.tmpfiles $(DESTDIR)$(TMPFILESDIR)/resild.conf
	install -d $(DESTDIR)$(PYTHON_SITE)/resil
	install -m 0644 client/python/resil/*.py $(DESTDIR)$(PYTHON_SITE)/resil/
	@if [ -e $(CONF) ]; then \
	    echo "install: keeping the existing $(CONF)"; \
	else \
	    install -m 0644 systemd/config.example.json $(CONF); \
	fi
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then ldconfig || true; fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/resild $(DESTDIR)$(BINDIR)/resilctl \
	    $(DESTDIR)$(LIBDIR)/libresil.a $(DESTDIR)$(LIBDIR)/$(SO_FULL) \
	    $(DESTDIR)$(LIBDIR)/libresil.so.$(SOVERSION) \
	    $(DESTDIR)$(LIBDIR)/libresil.so $(DESTDIR)$(INCLUDEDIR)/resil.h \
	    $(DESTDIR)$(PKGCONFIGDIR)/resil.pc \
	    $(DESTDIR)$(DOCDIR)/README.md $(DESTDIR)$(DOCDIR)/config.example.json \
	    $(DESTDIR)$(DOCDIR)/redis-tcp.conf \
	    $(DESTDIR)$(UNITDIR)/resild.service $(DESTDIR)$(UNITDIR)/resild.socket \
	    $(DESTDIR)$(SYSUSERSDIR)/resild.conf $(DESTDIR)$(TMPFILESDIR)/resild.conf
	@if [ -e $(CONF) ] && ! cmp -s $(CONF) systemd/config.example.json; then \
	    echo "uninstall: keeping $(CONF): it differs from the example"; \
	else \
	    rm -f $(CONF); \
	fi
	rm -rf $(DESTDIR)$(PYTHON_SITE)/resil
	-rmdir $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/resild 2>/dev/null

format:
	clang-format -i daemon/*.[ch] proto/*.[ch] client/*.[ch] tests/*.[ch]

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
