"""docs/DESIGN.md is the map of the tree: every file of csrc/ and redis_safepool/ is on it."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _layers_block() -> str:
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    assert blocks, "DESIGN.md's Layers section has no map"
    return blocks[0]


def _mapped() -> set:
    return {line.split()[0] for line in _layers_block().splitlines() if line.strip()}


def _files() -> list:
    """What must be on the map: C sources (a .c covers its .h), Python modules, packages."""
    wanted = []
    for path in sorted((ROOT / "csrc").iterdir()):
        if path.is_dir():
            wanted.append(f"csrc/{path.name}/")
        elif path.suffix == ".c" or (path.suffix == ".h" and not path.with_suffix(".c").exists()):
            wanted.append(f"csrc/{path.name}")
    for path in sorted((ROOT / "redis_safepool").iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            wanted.append(f"redis_safepool/{path.name}/")
        elif path.suffix == ".py":
            wanted.append(f"redis_safepool/{path.name}")
    return wanted


def test_every_file_is_on_the_design_map():
    missing = [f for f in _files() if f not in _mapped()]
    assert missing == [], f"add these to docs/DESIGN.md's Layers map: {missing}"


def test_the_map_names_no_file_that_is_gone():
    gone = [f for f in _mapped() if "/" in f and not (ROOT / f).exists()]
    assert gone == [], f"docs/DESIGN.md's map names files that do not exist: {gone}"


def test_only_the_binding_includes_python():
    # the map's "CPython binding" group, and the headers of its .c files
    group = _layers_block().split("CPython binding", 1)[1].split("Python package", 1)[0]
    binding = {line.split()[0].split("/")[-1] for line in group.splitlines()[1:] if line.strip()}
    binding |= {name[:-2] + ".h" for name in binding if name.endswith(".c")}
    for path in sorted((ROOT / "csrc").glob("*.[ch]")):
        if path.name in binding:
            continue
        text = path.read_text()
        assert "Python.h" not in text and "module_state.h" not in text, path.name
