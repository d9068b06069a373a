# Tests run against real PostgreSQL and Redis servers (see "Tests and real servers" in the design
# notes): `make test` first makes them available with scripts/services, then requires them.

GO ?= go
GOFMT ?= gofmt

.PHONY: test bench chaos fmt vet services

test: vet
	@unformatted=$$($(GOFMT) -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt -l lists files; run make fmt:"; echo "$$unformatted"; exit 1; fi
	scripts/services
	MUTEXKIT_REQUIRE_SERVICES=1 $(GO) test -race -count=1 ./...
	cd bench && MUTEXKIT_REQUIRE_SERVICES=1 $(GO) test -mod=mod -short -count=1 -bench . -benchtime 1x ./...

# Timing claims live here, never in unit tests: bench/ (its own module) runs every benchmark in
# BENCH_ROUNDS interleaved rounds against peers and floors and writes docs/BENCHMARKS.md.
BENCH_ROUNDS ?= 6
bench:
	scripts/services
	cd bench && $(GO) run -mod=mod ./cmd/runbench -rounds $(BENCH_ROUNDS) -out ../docs/BENCHMARKS.md

# The reliability suite (internal/chaos): every fault scenario for CHAOS_DURATION each, and
# docs/RELIABILITY.md from its figures. make test runs a short subset (3 s per scenario).
CHAOS_DURATION ?= 20s
chaos:
	scripts/services
	MUTEXKIT_REQUIRE_SERVICES=1 CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_REPORT=$(CURDIR)/docs/RELIABILITY.md \
		$(GO) test -count=1 -timeout 60m -run '^TestChaos$$' -v ./internal/chaos

fmt:
	$(GOFMT) -w .

vet:
	$(GO) vet ./...

services:
	scripts/services
