# The project's verbs: venv, peers, native, test, soak, check-install, bench, bench-quick,
# bench-cluster, run, lint, clean.

# Debian's CPython 3.11 is built with PGO and LTO: tegadb's request path runs
# about 11% fewer instructions on it than on a plain source build (such as
# pyenv's) and on ~20% less CPU.  Use it when it can make a venv, else python3.11.
SYSTEM_PYTHON := /usr/bin/python3.11
PYTHON ?= $(shell $(SYSTEM_PYTHON) -c 'import ensurepip' 2>/dev/null && echo $(SYSTEM_PYTHON) || echo python3.11)
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall only when the package metadata or the interpreter changes.
STAMP := $(VENV)/.installed-$(subst /,_,$(PYTHON))
# --use-pep517: a dependency without a pyproject.toml (jsonrpcserver) is then
# installed from a wheel, byte-compiled, not by pip's deprecated legacy
# `setup.py install` (which writes no bytecode under PYTHONDONTWRITEBYTECODE).
PIP_INSTALL := pip install --quiet --disable-pip-version-check --use-pep517

# tegadb as `pip install .` installs it (setup.py compiles the core): the
# tegadb-server that `make bench` measures, rebuilt when the package or the
# interpreter changes.
INSTALLED := build/venv-installed
INSTALLED_STAMP := $(INSTALLED)/.installed-$(subst /,_,$(PYTHON))
PACKAGE_FILES := setup.py setup.cfg pyproject.toml README.md $(shell find tegadb -name '*.py')

# The real peers the tests run against (Debian 12 packages), each group with
# the files whose absence means it must be installed.
# The OVSDB peers the tests compare against; ovn-central, not ovn-common,
# carries the OVN schemas on Debian 12.
OVS_PACKAGES := openvswitch-switch openvswitch-common ovn-central
OVS_FILES := /usr/sbin/ovsdb-server /usr/bin/ovsdb-client /usr/bin/ovsdb-tool \
	/usr/share/openvswitch/vswitch.ovsschema \
	/usr/share/ovn/ovn-nb.ovsschema /usr/share/ovn/ovn-sb.ovsschema
# etcd 3.4, which holds a cluster's commit log (issue 13); the tests start
# their own members (tests/etcdpeers.py).  The package's own service does not
# start where /usr/sbin/policy-rc.d refuses it (exit 101), as in containers.
ETCD_PACKAGES := etcd-server etcd-client
ETCD_FILES := /usr/bin/etcd /usr/bin/etcdctl
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: venv peers compiler native bytecode test soak check-install bench bench-quick bench-cluster bench-relay \
	run lint clean \
	distclean

venv: $(STAMP)

$(STAMP): setup.py setup.cfg pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/$(PIP_INSTALL) -e '.[test,lint,native]'
	touch $@

# Installs only the groups with a file missing, after one `apt-get update`.
peers:
	@missing=""; ovs=""; etcd=""; \
	for f in $(OVS_FILES); do \
		[ -e "$$f" ] || { missing="$$missing $$f"; ovs="$(OVS_PACKAGES)"; }; done; \
	for f in $(ETCD_FILES); do \
		[ -e "$$f" ] || { missing="$$missing $$f"; etcd="$(ETCD_PACKAGES)"; }; done; \
	if [ -n "$$missing" ]; then \
		echo "installing peers; missing:$$missing"; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			$$ovs $$etcd; \
	fi

# What the compiled core is built with, both by `make native` and by
# `pip install .`: the C compiler Python was built with, and Python's headers.
compiler:
	@$(PYTHON) -c 'import os, shutil, sys, sysconfig; \
		cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]; \
		headers = os.path.join(sysconfig.get_path("include"), "Python.h"); \
		sys.exit(not (shutil.which(cc) and os.path.exists(headers)))' || { \
		echo "installing a C compiler and the Python headers for the compiled core"; \
		$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends gcc libc6-dev python3.11-dev; }

# The compiled core of the checkout (tegadb/native.py): mypyc compiles the
# per-transaction modules into tegadb/_native/ when they changed since the
# last build (a compiled module older than its source is never used: it
# would be wrong).
native: venv compiler
	TEGADB_PURE=1 $(BIN)/python -c 'from tegadb import native; native.build_if_stale()'

# `pip install .` into a fresh venv, and a check that it runs compiled and
# that its three commands work (tests/bench/check_install.py).
$(INSTALLED_STAMP): $(PACKAGE_FILES) | venv compiler
	$(BIN)/python tests/bench/check_install.py --python $(PYTHON) $(INSTALLED)
	touch $@

# That, and the same without a C compiler: the install warns and falls back
# to the pure-Python modules, which work too.
check-install: $(INSTALLED_STAMP)
	$(BIN)/python tests/bench/check_install.py --python $(PYTHON) --no-compiler \
		build/venv-no-compiler

# Byte-compile the checkout as an install would: with PYTHONDONTWRITEBYTECODE
# set (as on these machines), every start would otherwise compile tegadb
# from source again (~0.1 s of each start-up).
bytecode: venv
	$(BIN)/python -m compileall -q tegadb

# Once on the compiled core (what runs), once on the same modules interpreted.
# The protocol tests a cluster member must pass as a standalone server does
# (issue 13): run once more against tegadb in cluster mode (TEGADB_TEST_CLUSTER).
MEMBER_TESTS := $(addprefix tests/integration/,test_server.py test_monitors.py test_locks.py \
	test_idl.py test_interop.py test_ovsdb_client_monitor.py test_conformance.py test_convert.py \
	test_relay.py)

# The interpreted pass checks that the pure-Python fallback (a pip install
# without a compiler) behaves as the compiled core does: the unit tests and
# the protocol's tests over real sockets, with a cluster's. The rest (the
# command line and the client library, never compiled; the server's
# fault, fuzz and relay tests, the same code either way) runs once, compiled.
PURE_TESTS := tests/unit $(filter-out %/test_relay.py,$(MEMBER_TESTS)) \
	$(addprefix tests/integration/,test_tool.py test_cluster.py test_reliability.py)

test: venv peers native bytecode
	TEGADB_EXPECT=compiled $(BIN)/pytest -q
	TEGADB_PURE=1 TEGADB_EXPECT=interpreted $(BIN)/pytest -q $(PURE_TESTS)
	TEGADB_TEST_CLUSTER=1 TEGADB_EXPECT=compiled $(BIN)/pytest -q -k tegadb $(MEMBER_TESTS)

# The reliability tests run long (issue 14): the fuzz tests with 5000 freshly
# drawn examples each, and 500 SIGKILLs instead of 50.
soak: venv peers native bytecode
	TEGADB_FUZZ_EXAMPLES=5000 TEGADB_FUZZ_RANDOM=1 TEGADB_KILLS=500 \
		$(BIN)/pytest -q tests/integration/test_fuzz.py tests/integration/test_reliability.py

# Side by side with ovsdb-server (issue 4): table on stdout, JSON in
# bench-results/.  The tegadb-server measured is the pip-installed one, as
# users run it; the in-process figures (D) use the checkout's compiled core.
# `bench` ends with the cluster workloads C1-C4 (issue 13); `bench-quick`
# leaves them out, `bench-cluster` runs only them.  Then the relays' R1-R2
# (issue 15, `bench-relay` alone).
bench: venv peers native bytecode $(INSTALLED_STAMP)
	$(BIN)/python tests/bench/bench_run.py --tegadb-bin $(INSTALLED)/bin
	$(BIN)/python tests/bench/bench_relay.py --tegadb-bin $(INSTALLED)/bin \
		--out bench-results/relay.json

bench-relay: venv peers native bytecode $(INSTALLED_STAMP)
	$(BIN)/python tests/bench/bench_relay.py --tegadb-bin $(INSTALLED)/bin \
		--out bench-results/relay.json

bench-quick: venv peers native bytecode $(INSTALLED_STAMP)
	$(BIN)/python tests/bench/bench_run.py --quick --tegadb-bin $(INSTALLED)/bin

bench-cluster: venv peers native bytecode $(INSTALLED_STAMP)
	$(BIN)/python tests/bench/bench_run.py --only C1,C2,C3,C4 --tegadb-bin $(INSTALLED)/bin \
		--out bench-results/cluster.json

run: venv native bytecode
	$(BIN)/tegadb-server

lint: venv
	$(BIN)/ruff check tegadb tests setup.py
	$(BIN)/mypy tegadb
	$(BIN)/lint-imports

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache tegadb/_native
	find tegadb tests -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
