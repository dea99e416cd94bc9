"""The .pyi stubs of the C extension name exactly what the extension defines."""

import ast
import pathlib

import redis_safepool
import redis_safepool._core as core

STUB = pathlib.Path(redis_safepool.__file__).with_name("_core.pyi")


def _stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text())


CLASSES = ("PoolCore", "LoopInbox")


def test_module_functions_match():
    body = _stub_tree().body
    names = {n.name for n in body if isinstance(n, ast.FunctionDef)}
    names |= {n.target.id for n in body if isinstance(n, ast.AnnAssign)}  # constants
    real = {n for n in dir(core) if not n.startswith("__") and n not in CLASSES}
    assert names == real


# typing-only classes of the stub (not in the C module) -> the class that has their members
TYPING_ONLY = {"_PoolCoreAPI": "PoolCore"}


def test_class_members_match():
    classes = {n.name: n for n in _stub_tree().body if isinstance(n, ast.ClassDef)}
    assert set(classes) == set(CLASSES) | set(TYPING_ONLY)
    for base, name in TYPING_ONLY.items():
        assert [b.id for b in classes[name].bases] == [base]
        classes[name].body += classes.pop(base).body
    for name, cls in classes.items():
        names = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
        names |= {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}
        real = {n for n in vars(getattr(core, name)) if not n.startswith("__")}
        assert names == real, name


def test_stubs_are_shipped():
    assert (STUB.parent / "py.typed").exists()
