# hull — the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
HULL := node bin/hull

.PHONY: all deps build image oci-image test test-unit test-integration demo bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	npm run build --silent

# Builds the guest image when an input changed (content-addressed; a no-op otherwise).
image: build
	$(HULL) image build

# The installer image deploy/daemonset.yaml runs (hull, node, kubectl, the guest image), as an OCI
# archive in dist/oci/ for `ctr -n k8s.io images import` on each node (deploy/README.md).
oci-image: image
	node dist/packaging/main.js

test-unit: build
	node --test dist/src/

test-integration: image
	node --test --test-concurrency=1 dist/test/integration/

test: image
	node --test --test-concurrency=1 dist/src/ dist/test/integration/
	# The CRI suites again with every pod after the first adopting a warm VM (src/pool), the
	# privileged-guest attacks among them.
	HULL_TEST_POOL=1 node --test --test-concurrency=1 dist/test/integration/shim.test.js dist/test/integration/network.test.js dist/test/integration/propagation.test.js dist/test/integration/privileged-guest.test.js

demo: image
	scripts/demo.sh

# Issue #5's benchmark: runc, gVisor and hull on one private containerd; prints a table with the
# targets and saves bench-results.json here (HULL_BENCH_RUNS, HULL_BENCH_PODS, HULL_BENCH_REPEATS).
bench: image
	node dist/bench/main.js

clean:
	rm -rf dist
