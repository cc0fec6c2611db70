# threatfeed — `make run` and `make test` are the two commands a newcomer needs.
# Everything else here is plumbing for those two (and bench/install).

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc
PORT    ?= 8080
STATE_DIR ?= ./var

PKGS      := fcgi libcurl json-c lmdb
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# The CLI and the supervisor do not load libcurl (it costs ~30 ms per exec).
CLI_LIBS   = $(shell pkg-config --libs json-c lmdb 2>/dev/null)

WARN    := -std=c11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes \
           -Wmissing-prototypes -Wvla -Wundef -Wpointer-arith -Wno-format-nonliteral
CPPFLAGS += -D_GNU_SOURCE -iquote lib -iquote worker -iquote fcgi
OPT     ?= -O2 -g
SAN     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

LIB_SRC    := $(wildcard lib/*.c)
CLI_SRC    := worker/main.c worker/supervisor.c
# everything a run's worker needs beyond lib/: fetch, drivers, STIX, probe
WORKER_SRC := $(filter-out worker/main.c worker/work_main.c,$(wildcard worker/*.c))
RUN_SRC    := $(filter-out worker/supervisor.c,$(WORKER_SRC))
FCGI_SRC   := $(filter-out fcgi/main.c,$(wildcard fcgi/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
HDRS       := $(wildcard lib/*.h worker/*.h fcgi/*.h)

# Two variants of every object: the release build and the ASan+UBSan build.
obj = $(patsubst %.c,$(1)/obj/%.o,$(2))

.PHONY: all asan test check unit integration browser fuzz-regress run bench install clean deps-build deps-test deps-run deps-bench
all: $(BUILD)/threatfeed $(BUILD)/threatfeed-worker $(BUILD)/threatfeed.fcgi

asan: $(BUILD)/asan/threatfeed $(BUILD)/asan/threatfeed-worker $(BUILD)/asan/threatfeed.fcgi

$(BUILD)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(OPT) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/asan/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(SAN) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/threatfeed: $(call obj,$(BUILD),$(CLI_SRC) $(LIB_SRC))
	$(CC) $(OPT) $(LDFLAGS) -o $@ $^ $(CLI_LIBS)

$(BUILD)/threatfeed-worker: $(call obj,$(BUILD),worker/work_main.c $(RUN_SRC) $(LIB_SRC))
	$(CC) $(OPT) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/threatfeed.fcgi: $(call obj,$(BUILD),fcgi/main.c $(FCGI_SRC) $(LIB_SRC))
	$(CC) $(OPT) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/asan/threatfeed: $(call obj,$(BUILD)/asan,$(CLI_SRC) $(LIB_SRC))
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(CLI_LIBS)

$(BUILD)/asan/threatfeed-worker: $(call obj,$(BUILD)/asan,worker/work_main.c $(RUN_SRC) $(LIB_SRC))
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/asan/threatfeed.fcgi: $(call obj,$(BUILD)/asan,fcgi/main.c $(FCGI_SRC) $(LIB_SRC))
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# Unit tests link every module but the two main()s, always under sanitizers.
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/asan/tests/%,$(UNIT_SRC))
$(BUILD)/asan/tests/%: $(BUILD)/asan/obj/tests/unit/%.o $(call obj,$(BUILD)/asan,$(WORKER_SRC) $(FCGI_SRC) $(LIB_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka

# ---- the two commands ------------------------------------------------------
deps-build deps-run deps-test deps-bench: deps-%:
	@scripts/deps.sh $*

test: deps-test
	@$(MAKE) --no-print-directory check

check: all asan $(UNIT_BINS)
	@BUILD=$(BUILD) scripts/test.sh

run: deps-run
	@$(MAKE) --no-print-directory all
	@PORT=$(PORT) STATE_DIR=$(STATE_DIR) BUILD=$(BUILD) scripts/run.sh

# Bench-only programs: the FastCGI floor and the rollback timer.
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(call obj,$(BUILD),$(LIB_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(OPT) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

bench: deps-bench
	@$(MAKE) --no-print-directory all $(BUILD)/bench/floor $(BUILD)/bench/rollback
	@BUILD=$(BUILD) python3 bench/bench.py

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/threatfeed \
	           $(DESTDIR)$(PREFIX)/share/threatfeed/www $(DESTDIR)$(PREFIX)/share/doc/threatfeed
	install -m 0755 $(BUILD)/threatfeed $(DESTDIR)$(PREFIX)/bin/threatfeed
	install -m 0755 $(BUILD)/threatfeed-worker $(DESTDIR)$(PREFIX)/bin/threatfeed-worker
	install -m 0755 $(BUILD)/threatfeed.fcgi $(DESTDIR)$(PREFIX)/lib/threatfeed/threatfeed.fcgi
	cp -R www/. $(DESTDIR)$(PREFIX)/share/threatfeed/www/
	cp -R deploy $(DESTDIR)$(PREFIX)/share/doc/threatfeed/
	install -m 0644 README.md LICENSE $(DESTDIR)$(PREFIX)/share/doc/threatfeed/

clean:
	rm -rf $(BUILD)
