# Packaging jobs (included by the Makefile): type checks, sdist, manylinux wheels, installed-package tests.

# CPython versions the wheel is tested on (requires-python in pyproject.toml); the interpreters
# come from pyenv (newest patch release) or else the PATH
WHEEL_PYTHONS  := 3.10 3.11 3.12 3.13
# one stable-ABI wheel (cp310-abi3) serves them all, built with the oldest (csrc/binding/abi_compat.h;
# its cost, measured by benchmarks/abi3_overhead.py, is in BENCHMARKS.md)
ABI3_PYTHON    := 3.10
ABI3_TAG       := cp310-abi3
PYENV_ROOT     ?= $(HOME)/.pyenv
# redis-py releases tested besides the newest (the [test] venv has the newest, full suite there)
REDIS_VERSIONS := 5.2.1 6.4.0 7.4.1
# a core subset of the suite for every Python and redis-py (the full suite runs on .venv)
CORE_TESTS     := tests/test_basic.py tests/test_args.py tests/test_budget.py tests/test_waiting.py \
                  tests/test_misuse.py tests/test_stats.py tests/test_asyncio.py \
                  tests/test_subinterpreters.py
CORE_DEPS      := pytest pytest-timeout
# arq pins redis<6: its worker test runs on this redis-py, in a venv of its own (arq brings
# hiredis, which the core subset's redis-py jobs run without)
ARQ_VERSION    := 0.28.0
ARQ_REDIS      := 5.2.1
ARQ_TESTS      := tests/test_arq.py
# manylinux2014 / glibc 2.17: the C compiler is zig's clang from PyPI (.ci/zigcc)
MANYLINUX      := manylinux_2_17_x86_64
ZIG_ENV         = ZIGCC_PYTHON=$(CURDIR)/$(PY) CC=$(CURDIR)/.ci/zigcc LDSHARED="$(CURDIR)/.ci/zigcc -shared"
TOOLS_PATH      = PATH=$(CURDIR)/$(VENV)/bin:$$PATH
# the sdist's tests, unpacked where no source tree is importable
INSTALLED_TESTS := build/installed-tests
PKG_PYTEST      = -m pytest -p no:cacheprovider -q --timeout=300 $(CORE_TESTS)

# `mypy` on the package, stubtest of the C core's stubs against the built extension, and
# `mypy --strict` on a user's script of the public API (the package is followed silently:
# the script is checked as its users' code would be)
typecheck: $(STAMP) build
	$(PY) -m mypy redis_safepool
	$(PY) -m mypy.stubtest redis_safepool._core
	$(PY) -m mypy --strict --python-version 3.11 --follow-imports=silent tests/typing/user_script.py

# dist/redis_safepool-*.tar.gz (C sources and headers, driver, tests, docs, LICENSE)
sdist: $(STAMP)
	rm -rf dist && mkdir -p build
	$(PY) -m build --sdist --no-isolation -o dist . >build/sdist.log 2>&1 || { cat build/sdist.log; exit 1; }
	@ls dist/*.tar.gz

# wheelhouse/: the $(ABI3_TAG) manylinux wheel, built from the sdist in a clean venv of
# $(ABI3_PYTHON) against the limited API, repaired and checked by auditwheel
wheels: sdist
	rm -rf wheelhouse build/raw-wheels
	@set -e; v=$(ABI3_PYTHON); \
	  py=$$(ls -d $(PYENV_ROOT)/versions/$$v.*/bin/python 2>/dev/null | sort -V | tail -1); \
	  [ -n "$$py" ] || py=$$(command -v python$$v) || { echo "no python$$v found"; exit 1; }; \
	  echo "== $(ABI3_TAG) wheel ($$py)"; t0=$$(date +%s); rm -rf build/wheel-env; "$$py" -m venv build/wheel-env; \
	  SAFEPOOL_ABI3=1 $(ZIG_ENV) build/wheel-env/bin/python -m pip wheel -q --no-deps \
	    -w build/raw-wheels dist/*.tar.gz; \
	  $(TOOLS_PATH) auditwheel repair -w wheelhouse --plat $(MANYLINUX) build/raw-wheels/*.whl \
	    >build/auditwheel.log 2>&1 || { cat build/auditwheel.log; exit 1; }; \
	  echo "-- $(ABI3_TAG) wheel: $$(( $$(date +%s) - t0 ))s"
	@set -e; for w in wheelhouse/*.whl; do \
	  case $$w in *-$(ABI3_TAG)-*) ;; *) echo "$$w: not $(ABI3_TAG)"; exit 1;; esac; \
	  $(TOOLS_PATH) auditwheel show $$w | grep '$(MANYLINUX)' >/dev/null || { echo "$$w: not $(MANYLINUX)"; exit 1; }; \
	  $(PY) -c 'import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); \
	    need = ("redis_safepool/py.typed", "redis_safepool/_core.pyi", "/licenses/LICENSE", \
	            "redis_safepool/_core.abi3.so"); \
	    sys.exit([n for n in need if not any(x.endswith(n) for x in names)] or None)' $$w; \
	done; ls wheelhouse

# the wheel in a clean venv of every Python without a compiler, then with each older
# redis-py: the core subset runs from the sdist's tests against the installed package
test-packages: wheels
	rm -rf $(INSTALLED_TESTS) build/sdist-src && mkdir -p $(INSTALLED_TESTS) build/sdist-src
	tar -xzf dist/*.tar.gz -C build/sdist-src --strip-components=1
	cp -r build/sdist-src/tests $(INSTALLED_TESTS)/
	printf '[pytest]\n' >$(INSTALLED_TESTS)/pytest.ini  # not the source tree's pyproject.toml
	@set -e; for v in $(WHEEL_PYTHONS); do \
	  py=$$(ls -d $(PYENV_ROOT)/versions/$$v.*/bin/python 2>/dev/null | sort -V | tail -1); \
	  [ -n "$$py" ] || py=$$(command -v python$$v); tag=cp$$(echo $$v | tr -d .); \
	  echo "== installed $(ABI3_TAG) wheel on Python $$v"; t0=$$(date +%s); env=$(CURDIR)/build/venv-$$tag; rm -rf $$env; "$$py" -m venv $$env; \
	  CC=/bin/false $$env/bin/python -m pip install -q --only-binary redis-safepool \
	    wheelhouse/*-$(ABI3_TAG)-*.whl $(CORE_DEPS); \
	  $(MAKE) --no-print-directory run-installed ENV=$$env; \
	  echo "-- Python $$v job: $$(( $$(date +%s) - t0 ))s"; \
	done
	@set -e; for r in $(REDIS_VERSIONS); do \
	  tag=$$(echo $$r | cut -d. -f1,2 | tr -d .); env=$(CURDIR)/.venv-redis$$tag; \
	  echo "== installed $(ABI3_TAG) wheel with redis-py $$r"; t0=$$(date +%s); \
	  test -x $$env/bin/python || python3 -m venv $$env; \
	  CC=/bin/false $$env/bin/python -m pip install -q --force-reinstall --no-deps wheelhouse/*-$(ABI3_TAG)-*.whl; \
	  $$env/bin/python -m pip install -q "redis==$$r" $(CORE_DEPS); \
	  $(MAKE) --no-print-directory run-installed ENV=$$env; \
	  echo "-- redis-py $$r job: $$(( $$(date +%s) - t0 ))s"; \
	done
	@set -e; env=$(CURDIR)/.venv-arq; t0=$$(date +%s); \
	  echo "== installed $(ABI3_TAG) wheel with arq $(ARQ_VERSION) on redis-py $(ARQ_REDIS)"; \
	  test -x $$env/bin/python || python3 -m venv $$env; \
	  CC=/bin/false $$env/bin/python -m pip install -q --force-reinstall --no-deps wheelhouse/*-$(ABI3_TAG)-*.whl; \
	  $$env/bin/python -m pip install -q "redis==$(ARQ_REDIS)" "arq==$(ARQ_VERSION)" $(CORE_DEPS); \
	  $(MAKE) --no-print-directory run-installed ENV=$$env CORE_TESTS="$(ARQ_TESTS)"; \
	  echo "-- arq job: $$(( $$(date +%s) - t0 ))s"

# (internal) the core subset against the package installed in ENV, from outside any source tree
run-installed:
	cd $(INSTALLED_TESTS) && $(ENV)/bin/python -c 'import sys, redis_safepool._core as c; \
	  sys.exit(0 if "site-packages" in c.__file__ else "not the installed package: " + c.__file__)'
	cd $(INSTALLED_TESTS) && PYTHONSAFEPATH=1 $(ENV)/bin/python $(PKG_PYTEST) $(PKG_PYTEST_EXTRA)
