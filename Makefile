# Tests run against real PostgreSQL and Redis servers (see "Tests and real servers" in the design
# notes): `make test` first makes them available with scripts/services, then requires them.

GO ?= go
GOFMT ?= gofmt

.PHONY: test bench fmt vet services

test: vet
	@unformatted=$$($(GOFMT) -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt -l lists files; run make fmt:"; echo "$$unformatted"; exit 1; fi
	scripts/services
	MUTEXKIT_REQUIRE_SERVICES=1 $(GO) test -race -count=1 ./...

# Timing claims live here, never in unit tests.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fmt:
	$(GOFMT) -w .

vet:
	$(GO) vet ./...

services:
	scripts/services
