# Included by the top Makefile: the daemons in workers/ build with `make build`, their
# C unit tests run with `make unit`.
BUILD_TARGETS += workers
UNIT_TARGETS += workers-unit
.PHONY: workers workers-unit workers-clean

workers:
	$(MAKE) -C workers

workers-unit:
	$(MAKE) -s -C workers unit

clean: workers-clean
workers-clean:
	$(MAKE) -C workers clean
