# mp-hsm: see README.md. `make test` and `make demo` work on a fresh Debian machine.
GO ?= go
COUNT ?= 5
BENCHTIME ?= 1s
export CGO_ENABLED := 1

.PHONY: all build test test-deb test-image image vet lint deps deb demo bench fuzz clean

all: build

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

build:
	$(GO) build -ldflags "-X main.buildVersion=$(VERSION)" -o mp-hsm ./cmd/mp-hsm

deps:
	@./scripts/deps.sh

# dist/mp-hsm_<version>_amd64.deb and _arm64.deb, reproducible, checked by
# lintian (scripts/deb.sh; a few minutes of cgo compiling on 2 cores the
# first time), then the package test on both: unpacked and run, the arm64
# binary under qemu-user, and built once more to compare the bytes.
deb:
	./scripts/deps.sh deb
	./scripts/deb.sh
	MP_HSM_DEB_DIR=$(CURDIR)/dist $(GO) test -count=1 ./packaging

# make test's package: amd64 only, without lintian (make deb runs both),
# to keep make test within its time on a fresh machine.
TEST_DEB_ARCHES = amd64
test-deb: deps
	ARCHES="$(TEST_DEB_ARCHES)" LINTIAN=0 ./scripts/deb.sh

# dist/mp-hsm-image_<version>_amd64.tar, an OCI image archive (podman load,
# skopeo copy oci-archive:...), reproducible, from the Debian package of the
# same commit and this machine's Debian libraries (scripts/image.sh).
image: deps
	./scripts/image.sh >/dev/null

# make test's image test: the image from test-deb's package, loaded into
# podman and run as a sidecar would run it (packaging/imagetest), and built
# once more to compare the bytes. Where podman does not work it says so in
# capitals and skips (fails with CI set).
test-image: deps test-deb
	img=$$(DEB_DIR=dist ./scripts/image.sh) && \
	MP_HSM_IMAGE=$(CURDIR)/$$img MP_HSM_IMAGE_DEB_DIR=$(CURDIR)/dist $(GO) test -v -count=1 -timeout 5m ./packaging/imagetest

vet: deps
	$(GO) vet ./...

# staticcheck at a pinned version, run through go run so that go.mod does
# not list it; part of make test.
STATICCHECK = honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) run $(STATICCHECK) ./...

# The packages that must build and test without cgo (docs/ARCHITECTURE.md).
PURE = ./grant/... ./signer ./daemon ./pkcs11uri ./tokenerr ./doctor ./inspect ./admin

# staticcheck (lint) first, then every test, with the race detector, against SoftHSM2 and the emulator,
# each package vetted with every analyzer (-vet=all; go vet alone for the
# few packages without tests); first the promise that only PKCS#11 needs
# cgo: the pure packages vet and test with CGO_ENABLED=0 (and
# cmd/mp-hsm's TestE2ENoCgo builds the command so). The package from
# test-deb is unpacked and run by packaging/, which builds it once more and
# compares the bytes. The conformance suite (internal/conformance) writes
# its results to dist/compat.jsonl, rendered to dist/COMPATIBILITY.md (copy
# it to docs/ to publish a run). bench/ (its own module, with gonum/plot)
# is vetted and tested by make bench. One vet per package and no separate
# go vet ./... keep make test within its 10 minutes on a fresh machine.
# deploy/kubernetes (its own module, with the Kubernetes API types) decodes
# the manifests of docs/kubernetes.md strictly; test-image runs the image.
NOTESTS = $(GO) list -f '{{if not (or .TestGoFiles .XTestGoFiles)}}{{.ImportPath}}{{end}}' ./...
test: deps test-deb lint test-image
	CGO_ENABLED=0 $(GO) build ./... && CGO_ENABLED=0 $(GO) vet ./...
	CGO_ENABLED=0 $(GO) test -vet=all -count=1 $(PURE)
	cd deploy/kubernetes && $(GO) test -vet=all -count=1 ./...
	$(GO) vet $$($(NOTESTS))
	mkdir -p dist && rm -f dist/compat.jsonl
	MP_HSM_DEB_DIR=$(CURDIR)/dist MP_HSM_DEB_ARCHES="$(TEST_DEB_ARCHES)" MP_HSM_COMPAT_OUT=$(CURDIR)/dist/compat.jsonl $(GO) test -race -vet=all -count=1 -timeout 9m ./...
	$(GO) run ./internal/conformance/compatreport -in dist/compat.jsonl -out dist/COMPATIBILITY.md

clean:
	rm -rf mp-hsm bin .demo dist

# The main job on an embedded default: a SoftHSM2 token in .demo/ and the
# local emulator. Finishes in well under a minute.
demo: deps
	VERSION=$(VERSION) ./scripts/demo.sh

# Every benchmark on SoftHSM2 and the emulator, in one run, and
# docs/BENCHMARKS.md from it (about 4 minutes on 2 cores): make bench COUNT=10
bench: deps
	COUNT=$(COUNT) BENCHTIME=$(BENCHTIME) ./scripts/bench.sh

# Every fuzz target for FUZZTIME each (default 30s): make fuzz FUZZTIME=2m
fuzz: deps
	./scripts/fuzz.sh
