# pgpod: `make run` (install what is missing, build, start everything, stay in the
# foreground) and `make check` (the whole suite on a throwaway instance).
SHELL := /bin/bash
.DEFAULT_GOAL := run
export PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config

BUILD_TARGETS := extension
UNIT_TARGETS :=
.PHONY: all deps build extension install run start stop status psql check unit \
	check-sql check-integration bench fuzz clean

# Components add themselves to BUILD_TARGETS / UNIT_TARGETS here.
-include gateway/gateway.mk
-include workers/workers.mk
-include extension/extension.mk

all: build

# Installs the Debian packages of deps.txt that are not installed yet (apt-get). A
# line "package:command" is also satisfied by that command on the PATH (Node.js from
# another source than Debian's, say).
deps:
	@missing=$$(grep -v '^\s*\(#\|$$\)' deps.txt | while IFS=: read -r p c; do \
	  [ -n "$$c" ] && command -v "$$c" >/dev/null && continue; \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' || echo "$$p"; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing missing packages:" $$missing; \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null \
	    || { echo "apt-get install failed for:" $$missing; exit 1; }; \
	fi

build: $(BUILD_TARGETS)

extension:
	$(MAKE) -C extension

# The extension goes into the server's directories (root, or sudo when not root).
install: extension
	@if [ "$$(id -u)" -eq 0 ]; then $(MAKE) -s -C extension install; \
	 else sudo $(MAKE) -s -C extension install PG_CONFIG=$(PG_CONFIG); fi

run: deps build install
	@scripts/pgpod run

start: deps build install
	@scripts/pgpod start

stop:
	@scripts/pgpod stop

status:
	@scripts/pgpod status

psql:
	@scripts/pgpod psql

unit: $(UNIT_TARGETS)

# The whole suite on its own instance (other ports, removed afterwards), with the
# daemons' sanitizer builds (ASan + UBSan) running in the integration tests.
check: deps build install sanitize
	@tests/check

.PHONY: sanitize
sanitize: gateway-asan
	$(MAKE) -s -C workers asan


bench: deps build install
	@tests/bench/run

clean:
	$(MAKE) -C extension clean
