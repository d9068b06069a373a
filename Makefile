# Tests run against real PostgreSQL and Redis servers (see "Tests and real servers" in the design
# notes): `make test` first makes them available with scripts/services, then requires them.

GO ?= go
GOFMT ?= gofmt
# staticcheck runs from the module proxy at a pinned version: no binary to install.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Every module of the repository (the core, bench/, and each adapter or driver
# with a go.mod of its own). bench/ is run as benchmarks, the others as tests.
MODULES := $(patsubst ./%,%,$(patsubst %/go.mod,%,$(shell find . -name go.mod -not -path './.git/*' | sort)))
TEST_MODULES := $(filter-out bench,$(MODULES))

.PHONY: test lint bench chaos fmt vet services

test: lint
	scripts/services
	set -e; for m in $(TEST_MODULES); do \
		echo "== go test $$m"; \
		(cd $$m && MUTEXKIT_REQUIRE_SERVICES=1 $(GO) test -race -count=1 ./...); \
	done
	cd bench && MUTEXKIT_REQUIRE_SERVICES=1 $(GO) test -mod=mod -short -count=1 -bench . -benchtime 1x ./...

# gofmt, go vet and staticcheck on every module; make test runs it first.
lint:
	@unformatted=$$($(GOFMT) -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt -l lists files; run make fmt:"; echo "$$unformatted"; exit 1; fi
	set -e; for m in $(MODULES); do \
		echo "== lint $$m"; \
		cmp -s LICENSE $$m/LICENSE || { echo "$$m/LICENSE differs from LICENSE: each module carries the license (cp LICENSE $$m/)"; exit 1; }; \
		(cd $$m && GOFLAGS=-mod=mod $(GO) vet ./... && GOFLAGS=-mod=mod $(STATICCHECK) ./...); \
	done

# Timing claims live here, never in unit tests: bench/ (its own module) runs every benchmark in
# BENCH_ROUNDS interleaved rounds against peers and floors and writes docs/BENCHMARKS.md.
BENCH_ROUNDS ?= 6
bench:
	scripts/services
	cd bench && $(GO) run -mod=mod ./cmd/runbench -rounds $(BENCH_ROUNDS) -out ../docs/BENCHMARKS.md

# The reliability suite (internal/testing/chaos): every fault scenario for CHAOS_DURATION each, and
# docs/RELIABILITY.md from its figures. make test runs a short subset (3 s per scenario). driver/mysql,
# a module of its own, runs its scenarios on the same machinery first and hands its figures over
# through CHAOS_FIGURES.
CHAOS_DURATION ?= 20s
chaos:
	scripts/services
	set -e; figs=$$(mktemp); trap 'rm -f "$$figs"' EXIT; \
	(cd driver/mysql && MUTEXKIT_REQUIRE_SERVICES=1 CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_FIGURES="$$figs" \
		$(GO) test -count=1 -timeout 30m -run '^TestChaos$$' -v .); \
	MUTEXKIT_REQUIRE_SERVICES=1 CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_FIGURES="$$figs" CHAOS_REPORT=$(CURDIR)/docs/RELIABILITY.md \
		$(GO) test -count=1 -timeout 60m -run '^TestChaos$$' -v ./internal/testing/chaos

fmt:
	$(GOFMT) -w .

vet:
	set -e; for m in $(MODULES); do (cd $$m && GOFLAGS=-mod=mod $(GO) vet ./...); done

services:
	scripts/services
