# Makefile: development entry points for wsuv. `make help` lists them.
#
# wsuv-scm-1.rockspec is the source of truth for the Lua module build; this
# file drives it (luarocks make into ./.rocks, once per Lua ABI) and also
# builds the sans-IO core alone, without Lua, as build/libwsuv_core.a for the
# C tests, fuzzers, benchmarks and engines that link csrc/ws_*.c + wsuv.h.

SHELL := /bin/bash
.DEFAULT_GOAL := help

LUAS ?= lua5.1 lua5.4 luajit
FUZZ_SECONDS ?= 30
export LUAS FUZZ_SECONDS

CC ?= cc
CLANG ?= clang
CLANG_FORMAT ?= clang-format
CLANG_TIDY ?= clang-tidy
LUAROCKS ?= luarocks
LUACHECK ?= luacheck
SHELLCHECK ?= shellcheck
VALGRIND ?= valgrind
BUILD := build

# STYLE.md 10: C99, warnings as errors; -Wconversion where byte arithmetic
# lives (csrc/ws_*.c). Tests, fuzzers and benchmarks skip -Wconversion.
WARN := -std=c99 -Wall -Wextra -Werror -Wstrict-prototypes \
        -Wmissing-prototypes -Wshadow
CORE_CFLAGS := $(WARN) -Wconversion -O2 -fvisibility=hidden -fPIC
TEST_CFLAGS := $(WARN) -O1 -g
INCLUDES := -Icsrc -Icsrc/test
LDLIBS := -lcrypto -lz
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all \
             -fno-omit-frame-pointer -g -O1
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
            -fno-omit-frame-pointer -g -O1

# The rockspec build: luarocks' builtin backend takes CFLAGS from its config,
# so hidden visibility is passed here (only luaopen_wsuv_core and wsuv_* are
# marked visible). No -Werror, as for users' installs.
ROCK_CFLAGS ?= -O2 -fPIC -fvisibility=hidden
ROCKSPEC := wsuv-scm-1.rockspec

CORE_SRCS := $(wildcard csrc/ws_*.c)
CORE_HDRS := $(wildcard csrc/ws*.h)
CORE_OBJS := $(CORE_SRCS:csrc/%.c=$(BUILD)/obj/%.o)
CORE_LIB := $(BUILD)/libwsuv_core.a
BINDING_SRCS := $(filter-out $(CORE_SRCS),$(wildcard csrc/*.c))
BINDING_OBJS := $(BINDING_SRCS:csrc/%.c=$(BUILD)/binding/%.o)
LUA54_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
TEST_SRCS := $(wildcard csrc/test/test_*.c)
TEST_BINS := $(TEST_SRCS:csrc/test/%.c=$(BUILD)/test/%)
TEST_HDRS := $(wildcard csrc/test/*.h)
ASAN_OBJS := $(CORE_SRCS:csrc/%.c=$(BUILD)/asan/obj/%.o)
ASAN_BINS := $(TEST_SRCS:csrc/test/%.c=$(BUILD)/asan/%)
FUZZ_SRCS := $(wildcard fuzz/fuzz_*.c)
FUZZ_OBJS := $(CORE_SRCS:csrc/%.c=$(BUILD)/fuzz/obj/%.o)
FUZZ_BINS := $(FUZZ_SRCS:fuzz/%.c=$(BUILD)/fuzz/%)
BENCH_BIN := $(BUILD)/bench/bench_core
LOADGEN_BIN := $(BUILD)/bench/loadgen
RAW_ECHO_BIN := $(BUILD)/bench/raw_echo
FORMAT_FILES = $(wildcard csrc/*.[ch] csrc/test/*.[ch] fuzz/*.[ch] bench/*.c \
                 bench/servers/*.c examples/*.c)

# Objects only named in pattern rules would count as intermediate and be
# deleted after each build; keep them so rebuilds are incremental.
.SECONDARY: $(ASAN_OBJS) $(FUZZ_OBJS) \
            $(FUZZ_SRCS:fuzz/%.c=$(BUILD)/fuzz/target/%.o) \
            $(TEST_SRCS:csrc/test/%.c=$(BUILD)/test/obj/%.o)

.PHONY: help deps all build build-5.1 build-5.2 build-5.3 build-5.4 core \
        ctest ctest-build test demo lint luacheck check-layers check-docs \
        check-sources shellcheck format check-format tidy asan asan-build asan-lua asan-luajit \
        valgrind valgrind-lua fuzz fuzz-smoke examples-c bench bench-quick bench-core bench-deps \
        bench-build bench-callgrind bench-transport compdb binding clean

help:
	@echo "wsuv development targets:"
	@echo "  deps          install the Debian packages everything needs (.ci/deps)"
	@echo "  all           build wsuv.core for Lua 5.4 into ./.rocks (luarocks make)"
	@echo "  build-5.1     build wsuv.core for Lua 5.1 and LuaJIT into ./.rocks"
	@echo "  build         both of the above (build-5.2, build-5.3 work too)"
	@echo "  core          build/libwsuv_core.a: the sans-IO core without Lua"
	@echo "  ctest         build and run the C tests (csrc/test/test_*.c)"
	@echo "  test          deps, build, C tests, busted on LUAS=\"$(LUAS)\"; one summary line"
	@echo "  demo          deps, build, run examples/echo_server.lua"
	@echo "  lint          luacheck, check-layers, check-docs, check-sources, shellcheck, check-format"
	@echo "  format        clang-format -i the C sources"
	@echo "  check-format  fail if clang-format would change a C source"
	@echo "  tidy          clang-tidy over the core (.clang-tidy)"
	@echo "  asan          C tests under ASan+UBSan (clang)"
	@echo "  valgrind      C tests under valgrind"
	@echo "  valgrind-lua  plain and TLS transport paths under valgrind (Lua 5.4)"
	@echo "  asan-lua      busted on Lua 5.4 with wsuv.core and lua built with ASan+UBSan"
	@echo "  asan-luajit   the same on LuaJIT (no leak detection: see the Makefile)"
	@echo "  fuzz          build the libFuzzer targets (fuzz/fuzz_*.c)"
	@echo "  fuzz-smoke    run each fuzz target FUZZ_SECONDS=$(FUZZ_SECONDS) on a copy of its corpus"
	@echo "  bench         wsuv against node ws, python websockets, lua-http and raw"
	@echo "                TCP echoes in Lua and C, 3 repeats (bench/run; about 14 minutes)"
	@echo "  bench-quick   the same, 1 repeat, short and smaller (about 2 minutes)"
	@echo "  bench-deps    install the peers only the benchmarks need (bench/deps)"
	@echo "  bench-core    core micro-benchmarks (bench/bench_core.c)"
	@echo "  bench-transport  wss:// and permessage-deflate against plain ws:// (QUICK=1: short)"
	@echo "  bench-callgrind  bench-core under callgrind (instruction counts)"
	@echo "  compdb        compile_commands.json via bear"
	@echo "  binding       compile csrc/lua_*.c, uv_*.c with -Werror (Lua 5.4 headers)"
	@echo "  clean         remove build/, .rocks/ and generated files"

deps:
	@.ci/deps

all: build-5.4

build: build-5.1 build-5.4

# luarocks make compiles in the directory it runs in, so each build runs in
# a private copy under build/: objects never land in csrc/, and builds for
# two ABIs (or two make runs at once) cannot delete each other's objects.
# The bin/wsuv wrapper is shared by both ABIs in one tree; the last wins.
build-5.1 build-5.2 build-5.3 build-5.4: build-%:
	@mkdir -p $(BUILD) && rm -f .rocks/bin/wsuv .rocks/bin/wsuv~
	@d=$$(mktemp -d $(BUILD)/rock-$*.XXXXXX) && \
	cp -R $(ROCKSPEC) csrc lua $$d/ && { [ ! -d bin ] || cp -R bin $$d/; } && \
	echo "luarocks make --tree=.rocks --lua-version=$* (in $$d)" && \
	(cd $$d && $(LUAROCKS) make --tree="$(CURDIR)/.rocks" --lua-version=$* \
	  $(ROCKSPEC) CFLAGS="$(ROCK_CFLAGS)"); \
	status=$$?; rm -rf $$d; exit $$status

core: $(CORE_LIB)

$(CORE_LIB): $(CORE_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/obj/%.o: csrc/%.c $(CORE_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CORE_CFLAGS) -Icsrc -c $< -o $@

ctest-build: $(TEST_BINS)

$(BUILD)/test/obj/%.o: csrc/test/%.c $(CORE_HDRS) $(TEST_HDRS)
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) $(INCLUDES) -c $< -o $@

$(BUILD)/test/%: $(BUILD)/test/obj/%.o $(CORE_LIB)
	@mkdir -p $(@D)
	$(CC) $^ $(LDLIBS) -o $@

ctest: ctest-build
	@.ci/ctest ctest $(BUILD)/test

test:
	@.ci/test-all

demo: deps build-5.4
	LUA_PATH="./lua/?.lua;./lua/?/init.lua;;" \
	LUA_CPATH="./.rocks/lib/lua/5.4/?.so;;" \
	lua5.4 examples/echo_server.lua

lint:
	@.ci/lint

# Inline "-- luacheck:" directives are allowed in lua/wsuv/compat.lua only.
luacheck:
	$(LUACHECK) --no-color .
	@! grep -rnE -- '--[[:space:]]*luacheck:' lua spec examples bin 2>/dev/null | \
	  grep -v '^lua/wsuv/compat.lua:' | sed 's/$$/  <- inline luacheck directive outside compat.lua/' | grep .

check-layers:
	@.ci/check-layers

check-docs:
	@.ci/check-docs

check-sources:
	@.ci/check-sources

# Every shell script of the repository, found by its #! line.
SHELL_SCRIPTS = $(shell grep -lE '^\#!(/bin/|/usr/bin/env )(ba)?sh' .ci/* bench/* spec/peers/* 2>/dev/null)

shellcheck:
	$(SHELLCHECK) $(SHELL_SCRIPTS)

format:
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

check-format:
	$(CLANG_FORMAT) --dry-run --Werror $(FORMAT_FILES)

# Uses compile_commands.json, made by `make compdb` when it is missing.
tidy: $(if $(wildcard compile_commands.json),,compdb)
	$(CLANG_TIDY) -p . --quiet $(CORE_SRCS) fuzz/*.c bench/*.c

asan-build: $(ASAN_BINS)

$(BUILD)/asan/obj/%.o: csrc/%.c $(CORE_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(WARN) -Wconversion $(SAN_FLAGS) -Icsrc -c $< -o $@

$(BUILD)/asan/%: csrc/test/%.c $(ASAN_OBJS) $(TEST_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(WARN) $(SAN_FLAGS) $(INCLUDES) $< $(ASAN_OBJS) $(LDLIBS) -o $@

asan: asan-build
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	.ci/ctest asan $(BUILD)/asan

# busted's whole spec/ with wsuv.core and the interpreter (spec/host/
# lua_host.c) built with ASan+UBSan: the binding and the transport under the
# sanitizers, the child Lua processes of the specs too. asan-lua is Lua 5.4,
# asan-luajit LuaJIT (its FFI entry points). The case of `lua -i` needs an
# option the host has not. build-5.4: the specs that compile their own hosts
# load the plain build. LuaJIT runs without leak detection: its heap is not
# malloc's, so LeakSanitizer cannot see the pointers a live loop keeps there
# when a script ends with os.exit (a closed state frees them all). Per
# interpreter (the stem of asan-%): its pkg-config name and LeakSanitizer.
ASAN_PKG_lua := lua5.4
ASAN_PKG_luajit := luajit
ASAN_LEAKS_lua := 1
ASAN_LEAKS_luajit := 0
ASAN_HOST_CFLAGS := $(filter-out -std=c99,$(WARN)) -std=gnu11 $(SAN_FLAGS)

$(BUILD)/asan-%/lua: spec/host/lua_host.c
	@mkdir -p $(@D)
	$(CLANG) $(ASAN_HOST_CFLAGS) $$(pkg-config --cflags $(ASAN_PKG_$*)) $< \
	  $$(pkg-config --libs $(ASAN_PKG_$*)) -o $@

$(BUILD)/asan-%/wsuv/core.so: $(wildcard csrc/*.c) $(wildcard csrc/*.h)
	@mkdir -p $(@D)
	$(CLANG) $(ASAN_HOST_CFLAGS) $$(pkg-config --cflags $(ASAN_PKG_$*)) -Icsrc -shared -fPIC \
	  $(filter %.c,$^) -luv -lssl -lcrypto -lz -o $@

asan-lua asan-luajit: asan-%: build-5.4 $(BUILD)/asan-%/lua $(BUILD)/asan-%/wsuv/core.so
	@ASAN_OPTIONS=detect_leaks=$(ASAN_LEAKS_$*):abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	.ci/busted-suite $@ $(BUILD)/$@/lua $(BUILD)/$@ --filter-out="lua %-i"

valgrind: ctest-build
	@.ci/ctest valgrind $(BUILD)/test $(VALGRIND) -q --error-exitcode=1 --leak-check=full

# The transport and the binding under valgrind: one Lua 5.4 process walks
# plain and TLS paths (spec/valgrind/scenario.lua) with fresh certificates.
valgrind-lua: build-5.4
	@d=$$(mktemp -d) && sh spec/peers/gen_certs.sh $$d && \
	LUA_PATH="./lua/?.lua;;" LUA_CPATH="./.rocks/lib/lua/5.4/?.so;;" \
	  $(VALGRIND) -q --error-exitcode=9 --leak-check=full \
	  --errors-for-leak-kinds=definite --show-leak-kinds=definite \
	  lua5.4 spec/valgrind/scenario.lua $$d/ </dev/null; rc=$$?; rm -rf $$d; \
	if [ $$rc = 0 ]; then echo "valgrind-lua: 1 passed, 0 failed"; \
	else echo "valgrind-lua: 0 passed, 1 failed (exit $$rc)"; exit 1; fi

fuzz: $(FUZZ_BINS)

$(BUILD)/fuzz/obj/%.o: csrc/%.c $(CORE_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(WARN) -Wconversion $(FUZZ_SAN) -fsanitize=fuzzer-no-link -Icsrc -c $< -o $@

# Compiled and linked in two steps (as the tests and the benchmark are), so
# bear records a plain compile command, not clang's internal -cc1 one.
$(BUILD)/fuzz/target/%.o: fuzz/%.c fuzz/chunk.h csrc/test/sized_alloc.h $(CORE_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(WARN) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -Icsrc -Ifuzz -c $< -o $@

$(BUILD)/fuzz/%: $(BUILD)/fuzz/target/%.o $(FUZZ_OBJS)
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_SAN) -fsanitize=fuzzer $^ $(LDLIBS) -o $@

fuzz-smoke: fuzz
	@.ci/fuzz-smoke $(FUZZ_BINS)

# The C example on the core alone (examples/c_client.c): what an engine
# without Lua links.
examples-c: $(BUILD)/examples/c_client

$(BUILD)/examples/c_client: examples/c_client.c $(CORE_HDRS) $(CORE_LIB)
	@mkdir -p $(@D)
	$(CC) $(WARN) -O2 -Icsrc $< $(CORE_LIB) $(LDLIBS) -o $@

# Benchmarks are never part of `make test`: bench/ is outside the C test
# glob (csrc/test/test_*.c) and busted's spec/ directory.
bench-build: $(BENCH_BIN) $(LOADGEN_BIN) $(RAW_ECHO_BIN)

$(BUILD)/bench/%.o: bench/%.c $(CORE_HDRS)
	@mkdir -p $(@D)
	$(CC) $(WARN) -O2 -Icsrc -c $< -o $@

$(BENCH_BIN): $(BUILD)/bench/bench_core.o $(CORE_LIB)
	$(CC) $^ $(LDLIBS) -o $@

# The load generator and the raw TCP echo server link libuv; loadgen also
# links the sans-IO core, whose codec it uses as a client.
$(LOADGEN_BIN): $(BUILD)/bench/loadgen.o $(CORE_LIB)
	$(CC) $^ -luv -lssl $(LDLIBS) -lm -o $@

$(BUILD)/bench/servers/%.o: bench/servers/%.c
	@mkdir -p $(@D)
	$(CC) $(WARN) -O2 -c $< -o $@

$(RAW_ECHO_BIN): $(BUILD)/bench/servers/raw_echo.o
	$(CC) $^ -luv -o $@

# bench/run builds what it needs itself (bench-build, build), then runs
# every server and scenario; results in build/bench/results.{json,md}.
bench:
	@bench/run

bench-quick:
	@bench/run --quick

bench-deps:
	@bench/deps

bench-core: $(BENCH_BIN)
	$(BENCH_BIN)

# What wss:// and permessage-deflate cost next to plain ws:// (issues 4, 5):
# a wsuv client and server in one Lua 5.4 process, certificates made fresh.
bench-transport: build-5.4
	@d=$$(mktemp -d) && sh spec/peers/gen_certs.sh $$d && \
	LUA_PATH="./lua/?.lua;;" LUA_CPATH="./.rocks/lib/lua/5.4/?.so;;" \
	  lua5.4 bench/transport.lua $$d/ $(if $(QUICK),--quick,); rc=$$?; rm -rf $$d; exit $$rc

bench-callgrind: $(BENCH_BIN)
	$(VALGRIND) --tool=callgrind --callgrind-out-file=$(BUILD)/bench/callgrind.out \
	  $(BENCH_BIN) --quick
	callgrind_annotate --auto=no $(BUILD)/bench/callgrind.out | sed -n '/file:function/,$$p' | head -n 20

# The rockspec build runs in a temporary copy, so the binding's entries come
# from `make binding`, which compiles the same files in place.
compdb:
	bear --output compile_commands.json -- $(MAKE) -k -B core ctest-build bench-build fuzz binding

# The binding and transport with the dev warnings, as errors; the rockspec
# build leaves -Werror off for users' compilers. gnu99 rather than c99:
# uv.h needs POSIX types (pthread_rwlock_t) that strict C99 hides.
binding: $(BINDING_OBJS)

$(BUILD)/binding/%.o: csrc/%.c $(wildcard csrc/*.h)
	@mkdir -p $(@D)
	$(CC) $(filter-out -std=c99,$(WARN)) -std=gnu99 -O2 -fPIC -fvisibility=hidden \
	  $(LUA54_CFLAGS) -Icsrc -c $< -o $@

clean:
	rm -rf $(BUILD) .rocks compile_commands.json
