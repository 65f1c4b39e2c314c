# Included by the top Makefile: the C unit tests and the libFuzzer target of the
# extension's server-independent code (bencode.c, metainfo.c: plain C that the seeder
# shares). `make unit` runs the tests plainly and under ASan/UBSan plus a 20 s fuzz
# run; `make fuzz-bencode` fuzzes for longer.
UNIT_TARGETS += torrent-unit
.PHONY: torrent-unit torrent-fuzz-smoke fuzz-bencode

TR_SRCS := extension/src/bencode.c extension/src/metainfo.c
TR_HDRS := extension/src/bencode.h extension/src/metainfo.h
TR_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -g -Iextension/src -Iworkers/lib $(PGPOD_EXTRA_CFLAGS)
TR_OUT := extension/build
TR_FUZZ_SECONDS ?= 300

# TAP through workers/lib/tap.h, the one helper of the C unit tests
$(TR_OUT)/test_bencode: tests/unit/torrent/test_bencode.c $(TR_SRCS) $(TR_HDRS) workers/lib/tap.h workers/lib/tap.c
	@mkdir -p $(TR_OUT)
	$(CC) $(TR_CFLAGS) -O2 -o $@ $< $(TR_SRCS) workers/lib/tap.c -lcrypto

$(TR_OUT)/test_bencode-asan: tests/unit/torrent/test_bencode.c $(TR_SRCS) $(TR_HDRS) workers/lib/tap.h workers/lib/tap.c
	@mkdir -p $(TR_OUT)
	clang $(TR_CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	  -o $@ $< $(TR_SRCS) workers/lib/tap.c -lcrypto

$(TR_OUT)/fuzz_bencode: tests/unit/torrent/fuzz_bencode.c $(TR_SRCS) $(TR_HDRS)
	@mkdir -p $(TR_OUT)
	clang $(TR_CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=all -o $@ $< $(TR_SRCS)

torrent-unit: $(TR_OUT)/test_bencode $(TR_OUT)/test_bencode-asan torrent-fuzz-smoke
	@$(TR_OUT)/test_bencode | tail -1
	@ASAN_OPTIONS=detect_leaks=1 $(TR_OUT)/test_bencode-asan >/dev/null && echo "bencode unit tests under ASan/UBSan: ok"

torrent-fuzz-smoke: $(TR_OUT)/fuzz_bencode
	@mkdir -p $(TR_OUT)/corpus
	set -o pipefail; $(TR_OUT)/fuzz_bencode -max_total_time=20 -max_len=4096 -print_final_stats=0 \
	  -artifact_prefix=$(TR_OUT)/ $(TR_OUT)/corpus tests/unit/torrent/corpus 2>&1 | tail -3

fuzz-bencode: $(TR_OUT)/fuzz_bencode
	@mkdir -p $(TR_OUT)/corpus
	$(TR_OUT)/fuzz_bencode -max_total_time=$(TR_FUZZ_SECONDS) -max_len=8192 -artifact_prefix=$(TR_OUT)/ \
	  $(TR_OUT)/corpus tests/unit/torrent/corpus
