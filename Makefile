# ironlb — see README.md.
SHELL := /bin/bash
GO ?= go
# Integration tests start real API servers; the first run also builds them (minutes).
TEST_TIMEOUT ?= 40m

.PHONY: all build generate verify-generate vet test test-unit test-integration test-e2e upstream lab lab-down lab-status lab-down-tests bench clean

all: build

build:
	$(GO) build -o bin/ ./cmd/...

# CRDs and deepcopy come from the markers in api/; never edit them by hand.
generate:
	$(GO) tool controller-gen object paths=./api/...
	$(GO) tool controller-gen crd paths=./api/... output:crd:artifacts:config=deploy/crds

verify-generate:
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(GO) tool controller-gen crd paths=./api/... output:crd:artifacts:config=$$tmp && \
	diff -r deploy/crds $$tmp && \
	cp api/v1alpha1/zz_generated.deepcopy.go $$tmp/deepcopy.go && \
	$(GO) tool controller-gen object paths=./api/... && \
	if ! diff -q $$tmp/deepcopy.go api/v1alpha1/zz_generated.deepcopy.go >/dev/null; then \
		cp $$tmp/deepcopy.go api/v1alpha1/zz_generated.deepcopy.go; \
		echo "api/v1alpha1/zz_generated.deepcopy.go is out of date: run make generate"; exit 1; fi

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	cd e2e && if [ -n "$$($(GO) list ./... 2>/dev/null)" ]; then $(GO) vet ./...; fi

# Every test: unit tests, integration tests that run ironlb-ccm against a real
# kube-apiserver and etcd, and end-to-end tests in the lab (root needed).
test: verify-generate vet upstream test-unit test-integration test-e2e

# The pinned upstream binaries, built once into a cache keyed by version (minutes cold,
# nothing warm), all in one go build so that they share its work.
upstream:
	cd e2e && $(GO) run ./cmd/lab build

# The end-to-end suites; each brings up a lab of its own and takes it down. After an
# interrupted run, the next run (or make lab-down-tests) removes what was left.
test-e2e:
	cd e2e && { $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./... ; rc=$$?; $(GO) run ./cmd/lab down --tests; exit $$rc; }

# A lab with a sample pool and Service, and the curl that reaches it.
lab:
	cd e2e && $(GO) run ./cmd/lab up

lab-down:
	cd e2e && $(GO) run ./cmd/lab down

lab-status:
	cd e2e && $(GO) run ./cmd/lab status

lab-down-tests:
	cd e2e && $(GO) run ./cmd/lab down --tests

test-unit:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v /test/)

test-integration:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./test/integration/

# Allocator micro-benchmarks and Services per second on a real API server, as one table; then
# L2 failover, creation-to-traffic and the speakers' API requests at rest in a lab (root).
bench:
	$(GO) run ./test/bench
	cd e2e && $(GO) run ./cmd/bench

clean:
	rm -rf bin
