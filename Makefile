# ironlb — see README.md.
SHELL := /bin/bash
GO ?= go
# Integration tests start real API servers; the first run also builds them (minutes).
TEST_TIMEOUT ?= 40m
# Every build, vet and test with the flags of the upstream build and the images (static,
# trimmed paths), so that they share one build cache instead of compiling the Kubernetes
# libraries once per flag set.
export CGO_ENABLED := 0
export GOFLAGS := -trimpath $(GOFLAGS)
# make test runs go vet over everything first, so go test does not vet each package again
# (its own subset of checks, with facts of every dependency: minutes on a cold cache).
GOTEST := $(GO) test -vet=off

.PHONY: all build images test-images generate verify-generate vet prereq test test-unit test-integration test-unit-integration test-e2e upstream lab lab-down lab-status lab-down-tests bench clean

# What the binaries (--version) and images say they are. PLATFORMS empty: the host's
# architecture only; e.g. PLATFORMS=linux/amd64,linux/arm64 for one image of both.
VERSION ?= v0.1.0
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
REGISTRY ?= ghcr.io/ironlb
PLATFORMS ?=
VERSION_LDFLAGS = -X github.com/ironlb/ironlb/internal/version.Version=$(VERSION) -X github.com/ironlb/ironlb/internal/version.Commit=$(COMMIT)

all: build

build:
	$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o bin/ ./cmd/...

# bin/images/ironlb-ccm.tar and ironlb-speaker.tar, $(REGISTRY)/<name>:$(VERSION), built
# without a container engine: each is an OCI layout and a docker-save archive at once, for
# kind load image-archive, docker load, podman load or skopeo copy oci-archive:.
images:
	$(GO) run ./hack/images -go "$(GO)" -out bin/images -version "$(VERSION)" -commit "$(COMMIT)" -registry "$(REGISTRY)" -platforms "$(PLATFORMS)"

# Opens bin/images/*.tar both ways, checks names, config, labels and files, and runs each
# binary in them with --version.
test-images: images
	IRONLB_IMAGES="$(CURDIR)/bin/images" IRONLB_IMAGES_VERSION="$(VERSION)" IRONLB_IMAGES_COMMIT="$(COMMIT)" \
	IRONLB_IMAGES_REGISTRY="$(REGISTRY)" IRONLB_IMAGES_PLATFORMS="$(PLATFORMS)" \
	$(GOTEST) -count=1 -v -run '^TestImages$$' ./hack/images/

# CRDs and deepcopy come from the markers in api/; never edit them by hand.
generate:
	$(GO) tool controller-gen object paths=./api/...
	$(GO) tool controller-gen crd paths=./api/... output:crd:artifacts:config=deploy/crds
	cp deploy/crds/ironlb.io_*.yaml deploy/helm/ironlb/crds/

verify-generate:
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(GO) tool controller-gen crd paths=./api/... output:crd:artifacts:config=$$tmp && \
	diff -r -x kustomization.yaml deploy/crds $$tmp && \
	{ diff -r -x kustomization.yaml deploy/crds deploy/helm/ironlb/crds || \
		{ echo "deploy/helm/ironlb/crds differs from deploy/crds: run make generate"; exit 1; }; } && \
	cp api/v1alpha1/zz_generated.deepcopy.go $$tmp/deepcopy.go && \
	$(GO) tool controller-gen object paths=./api/... && \
	if ! diff -q $$tmp/deepcopy.go api/v1alpha1/zz_generated.deepcopy.go >/dev/null; then \
		cp $$tmp/deepcopy.go api/v1alpha1/zz_generated.deepcopy.go; \
		echo "api/v1alpha1/zz_generated.deepcopy.go is out of date: run make generate"; exit 1; fi

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	cd e2e && if [ -n "$$($(GO) list ./... 2>/dev/null)" ]; then $(GO) vet ./...; fi

# Everything make lab, make test and make bench need, checked in a second before any build:
# the Debian packages of hack/prereq/packages.txt (the only list; as root on Debian or Ubuntu
# the check installs what is missing with apt-get, IRONLB_PREREQ_INSTALL=no only reports),
# root, the kernel features of the lab, free disk where the build caches live, and Go.
PREREQ_FOR ?= make $(or $(MAKECMDGOALS),prereq)
prereq:
	@$(GO) run ./hack/prereq -for "$(PREREQ_FOR)"

# Every test: unit tests, integration tests that run ironlb-ccm against a real
# kube-apiserver and etcd, and end-to-end tests in the lab (root needed). Each step says how
# long it took; the first that fails ends the run.
TEST_STEPS := prereq upstream verify-generate vet test-images test-unit-integration test-e2e
test:
	@start=$$(date +%s); for step in $(TEST_STEPS); do s=$$(date +%s); \
	  $(MAKE) --no-print-directory $$step PREREQ_FOR="make test" || { echo "make test: $$step failed after $$(( $$(date +%s) - s ))s"; exit 1; }; \
	  echo "make test: $$step done in $$(( $$(date +%s) - s ))s ($$(( $$(date +%s) - start ))s in all)"; done

# The pinned upstream binaries, kubectl and helm included, built once into a cache keyed by
# version (minutes cold, with progress; nothing warm), all in one go build so that they share
# its work. hack/upstream compiles in seconds: the first thing a cold run shows is the build's
# progress, and what the lab tool and the tests share with the upstream binaries (client-go,
# the API types) comes from the Go build cache afterwards.
upstream:
	$(GO) run ./hack/upstream -for test

# The end-to-end suites; each brings up a lab of its own and takes it down. After an
# interrupted run, the next run (or make lab-down-tests) removes what was left.
# e2e/l2scale (30 speakers) runs after the others, alone: two cores carry it or another lab, not both.
test-e2e: prereq
	cd e2e && { $(GOTEST) -count=1 -timeout $(TEST_TIMEOUT) -v $$($(GO) list ./... | grep -v /l2scale) ; rc=$$?; \
	  $(GOTEST) -count=1 -timeout $(TEST_TIMEOUT) -v ./l2scale/ || rc=1; $(GO) run ./cmd/lab down --tests; exit $$rc; }

# A lab with a sample pool and Service, and the curl that reaches it. It replaces a lab of
# its own (name "lab") and leaves the test suites' labs alone.
lab: prereq
	$(GO) run ./hack/upstream -for lab
	cd e2e && $(GO) run ./cmd/lab up

lab-down:
	cd e2e && $(GO) run ./cmd/lab down

lab-status:
	cd e2e && $(GO) run ./cmd/lab status

lab-down-tests:
	cd e2e && $(GO) run ./cmd/lab down --tests

test-unit:
	$(GOTEST) -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v -e /test/ -e /hack/images)

test-integration:
	$(GOTEST) -count=1 -timeout $(TEST_TIMEOUT) -v ./test/integration/

# Both in one go test, as make test runs them: the integration package (the longest) first, so
# that its API servers run while the unit tests take the other slot of two; each package's
# output shown when it fails.
test-unit-integration:
	$(GOTEST) -count=1 -timeout $(TEST_TIMEOUT) ./test/integration/ $$($(GO) list ./... | grep -v -e /test/ -e /hack/images)

# Allocator micro-benchmarks and Services per second on a real API server, as one table; one
# speaker recompute at 10,000 Services and 100 nodes; then
# L2 failover, creation-to-traffic and the speakers' API requests at rest in a lab (root).
bench: prereq upstream
	$(GO) run ./test/bench
	$(GO) test -run '^$$' -bench 'Plans|Conditions' -benchtime 3x -benchmem ./speaker/
	cd e2e && $(GO) run ./cmd/bench
	cd e2e && $(GO) run ./cmd/membench

clean:
	rm -rf bin
