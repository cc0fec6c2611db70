# threatfeed — `make run` and `make test` are the two commands a newcomer needs.
# Everything else here is plumbing for those two (and bench/install).

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc
PORT    ?= 8080
STATE_DIR ?= ./var
# empty: LMDB under STATE_DIR; postgresql://…: that PostgreSQL database
DB      ?=
# make bench STORE=postgres: the bench figures on a PostgreSQL it starts
STORE   ?= lmdb
# The one place the version is written: the binaries (--version, /api/health)
# and the Debian package take it from here.
VERSION := $(shell cat VERSION)

# libcrypto: the webhook signature (HMAC-SHA256, worker/webhook.c)
PKGS      := fcgi libcurl json-c lmdb libpq libcrypto
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# The CLI and the supervisor do not load libcurl (it costs ~30 ms per exec).
CLI_LIBS   = $(shell pkg-config --libs json-c lmdb libpq 2>/dev/null)

WARN    := -std=c11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes \
           -Wmissing-prototypes -Wvla -Wundef -Wpointer-arith -Wno-format-nonliteral
CPPFLAGS += -D_GNU_SOURCE -iquote lib -iquote lib/store -iquote worker -iquote worker/feeds \
            -iquote fcgi -iquote cli -DTF_VERSION='"$(VERSION)"'
OPT     ?= -O2 -g
# Release objects only: glibc's checked string/memory calls need -O, and
# under ASan its interceptors do that job.
HARDEN  := -D_FORTIFY_SOURCE=2
SAN     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

LIB_SRC    := $(wildcard lib/*.c lib/store/*.c)
CLI_SRC    := $(wildcard cli/*.c) worker/supervisor.c
# everything a run's worker needs beyond lib/: fetch, drivers, STIX, probe
WORKER_SRC := $(filter-out worker/work_main.c,$(wildcard worker/*.c worker/feeds/*.c))
RUN_SRC    := $(filter-out worker/supervisor.c,$(WORKER_SRC))
FCGI_SRC   := $(filter-out fcgi/main.c,$(wildcard fcgi/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
# VERSION: a new version rebuilds the objects that print it (all of them, simply)
HDRS       := $(wildcard lib/*.h lib/store/*.h worker/*.h worker/feeds/*.h fcgi/*.h cli/*.h) VERSION

# Two variants of every object: the release build and the ASan+UBSan build.
obj = $(patsubst %.c,$(1)/obj/%.o,$(2))

# Keep intermediate objects: make would otherwise delete them after `make test`
# and print that as the last line, after the summary.
.SECONDARY:

.PHONY: all asan test check unit integration browser fuzz-regress run bench soak install deb clean deps-build deps-test deps-run deps-bench deps-deb
all: $(BUILD)/threatfeed $(BUILD)/threatfeed-worker $(BUILD)/threatfeed.fcgi

asan: $(BUILD)/asan/threatfeed $(BUILD)/asan/threatfeed-worker $(BUILD)/asan/threatfeed.fcgi \
      $(BUILD)/asan/bench/populate

$(BUILD)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(HARDEN) $(WARN) $(OPT) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/asan/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(SAN) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/threatfeed: $(call obj,$(BUILD),$(CLI_SRC) $(LIB_SRC))
	$(CC) $(OPT) $(LDFLAGS) -o $@ $^ $(CLI_LIBS)

$(BUILD)/threatfeed-worker: $(call obj,$(BUILD),worker/work_main.c $(RUN_SRC) $(LIB_SRC))
	$(CC) $(OPT) -pthread $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/threatfeed.fcgi: $(call obj,$(BUILD),fcgi/main.c $(FCGI_SRC) $(LIB_SRC))
	$(CC) $(OPT) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/asan/threatfeed: $(call obj,$(BUILD)/asan,$(CLI_SRC) $(LIB_SRC))
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(CLI_LIBS)

$(BUILD)/asan/threatfeed-worker: $(call obj,$(BUILD)/asan,worker/work_main.c $(RUN_SRC) $(LIB_SRC))
	$(CC) $(SAN) -pthread $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/asan/threatfeed.fcgi: $(call obj,$(BUILD)/asan,fcgi/main.c $(FCGI_SRC) $(LIB_SRC))
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# Unit tests link every module but the two main()s, always under sanitizers.
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/asan/tests/%,$(UNIT_SRC))
$(BUILD)/asan/tests/%: $(BUILD)/asan/obj/tests/unit/%.o $(call obj,$(BUILD)/asan,$(WORKER_SRC) $(FCGI_SRC) $(LIB_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -pthread $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka

# The run's writer is the one module with threads: its unit test also runs
# under ThreadSanitizer (only the modules it uses, all instrumented).
TSAN     := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
TSAN_BIN := $(BUILD)/tsan/tests/test_writer
$(BUILD)/tsan/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(TSAN) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

$(TSAN_BIN): $(call obj,$(BUILD)/tsan,tests/unit/test_writer.c worker/writer.c $(LIB_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(TSAN) -pthread $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka

# ---- the two commands ------------------------------------------------------
deps-build deps-run deps-test deps-bench deps-deb: deps-%:
	@scripts/deps.sh $*

test: deps-test
	@$(MAKE) --no-print-directory check

check: all asan $(UNIT_BINS) $(TSAN_BIN)
	@BUILD=$(BUILD) scripts/test.sh

run: deps-run
	@$(MAKE) --no-print-directory all
	@PORT=$(PORT) STATE_DIR=$(STATE_DIR) DB=$(DB) BUILD=$(BUILD) scripts/run.sh

# Bench-only programs: the FastCGI floor, the rollback timer and the scale
# store generator (bench/populate.c).
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(call obj,$(BUILD),$(LIB_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(OPT) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# bench/populate under sanitizers too: tests/integration/test_scale.py fills
# its stores with it.
$(BUILD)/asan/bench/%: $(BUILD)/asan/obj/bench/%.o $(call obj,$(BUILD)/asan,$(LIB_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

bench: deps-bench
	@$(MAKE) --no-print-directory all $(BUILD)/bench/floor $(BUILD)/bench/rollback $(BUILD)/bench/populate
	@BUILD=$(BUILD) STORE=$(STORE) python3 bench/bench.py

# The chaos soak (tests/soak/soak.py; README "Soak"): SOAK_S seconds of runs
# of every feed type under random cancels, kills, stops, web server restarts,
# disk fills and upstream faults, with an invariant checker. It runs the ASan
# binaries by default (a sanitizer report is a violation); SOAK_BIN=$(BUILD)
# runs the release ones (figures closer to production). Exits non-zero at
# the first violation with the seed, the log and a copy of the store.
SOAK_S    ?= 600
SOAK_SEED ?=
SOAK_BIN  ?= $(BUILD)/asan
soak: deps-test
	@$(MAKE) --no-print-directory all asan
	@SOAK_S=$(SOAK_S) SOAK_SEED=$(SOAK_SEED) SOAK_BIN=$(SOAK_BIN) SOAK_OUT=$(BUILD)/soak \
	    TF_STACK_QUIET=1 python3 tests/soak/soak.py

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/threatfeed \
	           $(DESTDIR)$(PREFIX)/share/threatfeed/www $(DESTDIR)$(PREFIX)/share/doc/threatfeed
	install -m 0755 $(BUILD)/threatfeed $(DESTDIR)$(PREFIX)/bin/threatfeed
	install -m 0755 $(BUILD)/threatfeed-worker $(DESTDIR)$(PREFIX)/bin/threatfeed-worker
	install -m 0755 $(BUILD)/threatfeed.fcgi $(DESTDIR)$(PREFIX)/lib/threatfeed/threatfeed.fcgi
	cp -R www/. $(DESTDIR)$(PREFIX)/share/threatfeed/www/
	cp -R deploy $(DESTDIR)$(PREFIX)/share/doc/threatfeed/
	install -m 0644 README.md LICENSE $(DESTDIR)$(PREFIX)/share/doc/threatfeed/
	install -d $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 0644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 man/*.8 $(DESTDIR)$(PREFIX)/share/man/man8/

# build/threatfeed_VERSION_ARCH.deb from the release binaries, www/, deploy/,
# man/ and packaging/debian/ (scripts/mkdeb.sh; README "Installing the Debian
# package").
deb: deps-deb
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) VERSION=$(VERSION) scripts/mkdeb.sh

clean:
	rm -rf $(BUILD)

# ---- fuzzing ---------------------------------------------------------------
# libFuzzer harnesses, one per parser (tests/fuzz/fuzz_*.c), built with clang
# under ASan+UBSan. Every module but the main()s is linked in, instrumented
# for coverage (-fsanitize=fuzzer-no-link).
#   make fuzz [FUZZ_SECONDS=60]  runs each harness for that long; inputs it
#                                finds go to $(BUILD)/fuzz/corpus/NAME/, crashes
#                                to $(BUILD)/fuzz/artifacts/ (stops at the first)
#   make fuzz-regress            builds them and runs each once over its seed
#                                corpus tests/fuzz/corpus/NAME/ (for `make test`)
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_SAN     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=undefined
FUZZ_NAMES   := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS    := $(addprefix $(FUZZ_DIR)/,$(FUZZ_NAMES))
FUZZ_OBJS    := $(call obj,$(FUZZ_DIR),$(WORKER_SRC) $(FCGI_SRC) $(LIB_SRC))

$(FUZZ_DIR)/obj/%.o: %.c $(HDRS) $(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) -iquote tests/fuzz $(WARN) $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
	    $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

.PHONY: fuzz fuzz-build fuzz-regress
fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	@set -e; for n in $(FUZZ_NAMES); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$n $(FUZZ_DIR)/artifacts; \
	  dict=; [ -f tests/fuzz/$$n.dict ] && dict=-dict=tests/fuzz/$$n.dict; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS) s"; \
	  $(FUZZ_DIR)/$$n -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -timeout=10 \
	    -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$n- $$dict \
	    $(FUZZ_DIR)/corpus/$$n tests/fuzz/corpus/$$n 2>&1 | \
	    grep -E '^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|INFO: (seed|A corpus))|invariant|ERROR|Test unit written' || true; \
	  if ls $(FUZZ_DIR)/artifacts/$$n-* >/dev/null 2>&1; then \
	    echo "fuzz: $$n found a problem: $$(ls $(FUZZ_DIR)/artifacts/$$n-*)"; exit 1; fi; \
	done

fuzz-regress: fuzz-build
	@set -e; for n in $(FUZZ_NAMES); do \
	  files=$$(find tests/fuzz/corpus/$$n -type f | sort); \
	  $(FUZZ_DIR)/$$n $$files >$(FUZZ_DIR)/$$n.regress.log 2>&1 || \
	    { tail -n 40 $(FUZZ_DIR)/$$n.regress.log; echo "fuzz-regress: $$n FAILED"; exit 1; }; \
	  echo "fuzz-regress: $$n: $$(echo $$files | wc -w) inputs ok"; \
	done
