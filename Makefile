# ironlb — see README.md.
SHELL := /bin/bash
GO ?= go
# Integration tests start real API servers; the first run also builds them (minutes).
TEST_TIMEOUT ?= 40m

.PHONY: all build generate verify-generate vet test test-unit test-integration bench clean

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

# Every test: unit tests, and integration tests that run ironlb-ccm against a real
# kube-apiserver and etcd.
test: verify-generate vet test-unit test-integration

test-unit:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v /test/)

test-integration:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./test/integration/

# Allocator micro-benchmarks and Services per second on a real API server, as one table.
bench:
	$(GO) run ./test/bench

clean:
	rm -rf bin
