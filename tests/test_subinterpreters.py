"""The C core loads in the main interpreter only: a subinterpreter gets an ImportError."""

import sys

import redis_safepool._core as core

try:
    import _interpreters as interpreters  # 3.13
except ImportError:
    import _xxsubinterpreters as interpreters  # 3.10-3.12


def test_core_refuses_a_subinterpreter(tmp_path, make_pool, redis_server):
    pool = make_pool(redis_server.url, max_connections=2)
    pool.release(pool.get_connection())
    assert core.checker_running()
    out = tmp_path / "result"
    # the extension file itself, not the package (whose other imports could fail first)
    script = f"""
import importlib.util, sys
sys.path[:0] = {sys.path!r}
spec = importlib.util.spec_from_file_location("redis_safepool._core", {core.__file__!r})
try:
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    result = "imported"
except ImportError as exc:
    result = "ImportError: " + str(exc)
open({str(out)!r}, "w").write(result)
"""
    interp = interpreters.create()
    try:
        interpreters.run_string(interp, script)
    finally:
        interpreters.destroy(interp)
    result = out.read_text()
    assert result.startswith("ImportError") and "subinterpreters" in result, result
    # the main interpreter's module is untouched: its health checker still runs
    assert sys.modules["redis_safepool._core"] is core
    assert core.checker_running()
    pool.release(pool.get_connection())
