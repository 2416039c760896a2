# hull — the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
HULL := node bin/hull

.PHONY: all deps build image test test-unit test-integration demo bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	npm run build --silent

# Builds the guest image when an input changed (content-addressed; a no-op otherwise).
image: build
	$(HULL) image build

test-unit: build
	node --test dist/src/

test-integration: image
	node --test --test-concurrency=1 dist/test/integration/

test: image
	node --test --test-concurrency=1 dist/src/ dist/test/integration/

demo: image
	scripts/demo.sh

# Cold boot and `hull run` vs `runc run`; then `ctr run --rm IMG true` through hull vs runc on one containerd.
bench: image
	node dist/bench/run.js
	node dist/bench/ctr-run.js
	node dist/bench/pods.js

clean:
	rm -rf dist
