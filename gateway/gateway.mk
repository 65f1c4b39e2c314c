# The gateway's build, included by the top Makefile: `make build` builds
# gateway/pgpod-gateway, `make unit` runs its C unit tests (plain and under
# ASan/UBSan) and a short libFuzzer smoke run, `make fuzz` fuzzes for longer.
BUILD_TARGETS += gateway
UNIT_TARGETS += gateway-unit layers
.PHONY: gateway gateway-unit gateway-fuzz-smoke fuzz layers

GW_LAYERS := base transport db postgrest handlers
# The daemon library the gateway shares with workers/ (worker.h): logging, buffer,
# settings, backoff, the LISTEN connection, sd_notify.
GW_LIB := workers/lib/log.c workers/lib/buf.c workers/lib/env.c workers/lib/backoff.c \
	workers/lib/db.c workers/lib/notify.c workers/lib/hex.c workers/lib/durable.c workers/lib/daemon.c workers/lib/conn.c
GW_SRCS := $(sort $(wildcard gateway/*.c $(GW_LAYERS:%=gateway/%/*.c))) $(GW_LIB)
GW_HDRS := $(wildcard gateway/*.h $(GW_LAYERS:%=gateway/%/*.h)) workers/lib/worker.h
# What needs no server: parsers, builders, the response functions, the schema cache, JWT.
GW_CORE := gateway/base/arena.c gateway/base/buf.c gateway/postgrest/query_parse.c gateway/postgrest/request.c gateway/db/schema.c \
	gateway/postgrest/sql_build.c gateway/postgrest/sql_write.c gateway/postgrest/sql_rpc.c gateway/postgrest/jwt.c \
	gateway/transport/byte_range.c gateway/postgrest/fuzzy.c gateway/postgrest/sql_embed.c \
	gateway/postgrest/error.c gateway/postgrest/response.c gateway/postgrest/response_pg.c gateway/postgrest/openapi.c gateway/base/url.c workers/lib/log.c workers/lib/buf.c workers/lib/hex.c
GW_PGINC := $(shell $(PG_CONFIG) --includedir 2>/dev/null || echo /usr/include/postgresql)
GW_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -O2 -g -Igateway $(GW_LAYERS:%=-Igateway/%) -Iworkers/lib -I$(GW_PGINC) $(PGPOD_EXTRA_CFLAGS)
GW_LIBS := -lev -lpq -lhttp_parser -ljansson -lcrypto -lm
GW_TEST_LIBS := -ljansson -lcrypto -lhttp_parser -lpq -lm
GW_OUT := gateway/build
GW_UNIT_SRCS := $(sort $(wildcard tests/unit/gateway/test_*.c)) tests/unit/gateway/raw_request.c
GW_FUZZ_SECONDS ?= 300

gateway: gateway/pgpod-gateway

gateway/pgpod-gateway: $(GW_SRCS) $(GW_HDRS) gateway/gateway.mk
	$(CC) $(GW_CFLAGS) -o $@ $(GW_SRCS) $(GW_LIBS)

# A new tests/unit/gateway/test_*.c is picked up here and registers its TAP_TEST
# functions itself (workers/lib/tap.h): adding a test is one edit.
$(GW_OUT)/unit: $(GW_UNIT_SRCS) $(GW_CORE) $(GW_HDRS) workers/lib/tap.h workers/lib/tap.c tests/unit/gateway/raw_request.h
	@mkdir -p $(GW_OUT)
	$(CC) $(GW_CFLAGS) -o $@ $(GW_UNIT_SRCS) workers/lib/tap.c $(GW_CORE) $(GW_TEST_LIBS)

$(GW_OUT)/unit-asan: $(GW_UNIT_SRCS) $(GW_CORE) $(GW_HDRS) workers/lib/tap.h workers/lib/tap.c tests/unit/gateway/raw_request.h
	@mkdir -p $(GW_OUT)
	clang $(GW_CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	  -o $@ $(GW_UNIT_SRCS) workers/lib/tap.c $(GW_CORE) $(GW_TEST_LIBS)

$(GW_OUT)/fuzz: tests/unit/gateway/fuzz_request.c tests/unit/gateway/raw_request.c tests/unit/gateway/raw_request.h $(GW_CORE) $(GW_HDRS)
	@mkdir -p $(GW_OUT)
	clang $(GW_CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=all -Itests/unit/gateway -o $@ tests/unit/gateway/fuzz_request.c tests/unit/gateway/raw_request.c $(GW_CORE) $(GW_TEST_LIBS)

gateway-unit: $(GW_OUT)/unit $(GW_OUT)/unit-asan $(GW_OUT)/pg-send-check gateway-sql-expected gateway-fuzz-smoke \
  gateway-pool-check
	$(GW_OUT)/unit
	ASAN_OPTIONS=detect_leaks=1 $(GW_OUT)/unit-asan
	ASAN_OPTIONS=detect_leaks=1 $(GW_OUT)/pg-send-check

# The pool alone (no HTTP, no handlers) against a PostgreSQL the test starts itself
# (tests/unit/gateway/pool_check.sh: initdb in a temporary directory, a Unix socket
# only, stopped and removed by a trap), under ASan/UBSan: pipelining, errors in a
# pipeline, the statement cache, the server dying and coming back (wk_conn).
GW_POOL_SRCS := gateway/db/pool.c gateway/db/stmt_cache.c gateway/db/pg_send.c gateway/base/metrics.c \
	gateway/base/settings.c gateway/base/buf.c workers/lib/log.c workers/lib/buf.c workers/lib/backoff.c \
	workers/lib/conn.c workers/lib/tap.c
.PHONY: gateway-pool-check
$(GW_OUT)/pool-check: tests/unit/gateway/pool_check.c $(GW_POOL_SRCS) $(GW_HDRS) workers/lib/tap.h
	@mkdir -p $(GW_OUT)
	clang $(GW_CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	  -o $@ tests/unit/gateway/pool_check.c $(GW_POOL_SRCS) -lev -lpq
gateway-pool-check: $(GW_OUT)/pool-check
	ASAN_OPTIONS=detect_leaks=1 tests/unit/gateway/pool_check.sh $(GW_OUT)/pool-check

# The write coalescing with real libpq connections (its own binary: it defines
# send() for the process), under ASan/UBSan.
$(GW_OUT)/pg-send-check: tests/unit/gateway/pg_send_check.c gateway/db/pg_send.c gateway/db/pg_send.h workers/lib/tap.c
	@mkdir -p $(GW_OUT)
	clang $(GW_CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	  -o $@ tests/unit/gateway/pg_send_check.c gateway/db/pg_send.c workers/lib/log.c workers/lib/tap.c -lev -lpq

# The SQL builder's expected output (as pgvector's test/expected): each
# tests/unit/gateway/sql/<name>.http (requests) is run against sql/schema.rows
# (a schema cache) and the output, the whole statements with their parameters or
# the errors, must equal tests/unit/gateway/expected/<name>.out. After a deliberate
# change, review the diff and copy $(GW_OUT)/sql-results/<name>.out over it.
GW_SQL_CASES := $(sort $(wildcard tests/unit/gateway/sql/*.http))
.PHONY: gateway-sql-expected
$(GW_OUT)/sql-expected: tests/unit/gateway/sql_expected.c tests/unit/gateway/raw_request.c \
  tests/unit/gateway/raw_request.h $(GW_CORE) $(GW_HDRS)
	@mkdir -p $(GW_OUT)
	clang $(GW_CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	  -Itests/unit/gateway -o $@ tests/unit/gateway/sql_expected.c tests/unit/gateway/raw_request.c \
	  $(GW_CORE) $(GW_TEST_LIBS)
gateway-sql-expected: $(GW_OUT)/sql-expected
	@mkdir -p $(GW_OUT)/sql-results
	@failed=0; for f in $(GW_SQL_CASES); do n=$$(basename $$f .http); \
	  ASAN_OPTIONS=detect_leaks=1 $(GW_OUT)/sql-expected tests/unit/gateway/sql/schema.rows $$f \
	    > $(GW_OUT)/sql-results/$$n.out || { echo "not ok - sql/$$n.http: the runner failed"; failed=1; continue; }; \
	  if diff -u tests/unit/gateway/expected/$$n.out $(GW_OUT)/sql-results/$$n.out; then \
	    echo "ok - sql/$$n.http: $$(grep -c '^###' $$f) requests as expected/$$n.out"; \
	  else echo "not ok - sql/$$n.http differs from expected/$$n.out"; failed=1; fi; done; \
	  exit $$failed

# A brief run over the checked-in corpus plus 20 s of mutation: part of make check.
gateway-fuzz-smoke: $(GW_OUT)/fuzz
	@mkdir -p $(GW_OUT)/corpus
	@# pipefail: a crash must fail the check, not vanish behind tail.
	set -o pipefail; $(GW_OUT)/fuzz -dict=tests/unit/gateway/fuzz.dict -max_total_time=20 -max_len=4096 -print_final_stats=0 \
	  -artifact_prefix=$(GW_OUT)/ $(GW_OUT)/corpus tests/unit/gateway/corpus 2>&1 | tail -3

fuzz: $(GW_OUT)/fuzz
	@mkdir -p $(GW_OUT)/corpus
	$(GW_OUT)/fuzz -dict=tests/unit/gateway/fuzz.dict -max_total_time=$(GW_FUZZ_SECONDS) -max_len=8192 -artifact_prefix=$(GW_OUT)/ \
	  $(GW_OUT)/corpus tests/unit/gateway/corpus

# The server itself under ASan/UBSan, for running the integration tests against it:
#   make gateway-asan && PGPOD_URL=... gateway/build/pgpod-gateway-asan
.PHONY: gateway-asan
gateway-asan: $(GW_OUT)/pgpod-gateway-asan
$(GW_OUT)/pgpod-gateway-asan: $(GW_SRCS) $(GW_HDRS)
	@mkdir -p $(GW_OUT)
	clang $(GW_CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -o $@ $(GW_SRCS) $(GW_LIBS)

# The import graph (tests/unit/layers.py): gateway/ in layers whose arrows point one
# way (base <- transport, db <- postgrest <- handlers <- main/router), workers/ daemons
# on workers/lib only, no circles; from #include lines and from the symbols each
# object file really uses. Part of make unit (make check).
GW_OBJS := $(patsubst %.c,$(GW_OUT)/obj/%.o,$(GW_SRCS))
$(GW_OUT)/obj/%.o: %.c $(GW_HDRS)
	@mkdir -p $(dir $@)
	@$(CC) $(GW_CFLAGS) -c -o $@ $<
layers: $(GW_OBJS) workers
	python3 tests/unit/layers.py --objects $(GW_OUT)/obj
