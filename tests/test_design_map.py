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
    wanted.append("csrc/tests/")
    for layer in ("core", "binding"):
        for path in sorted((ROOT / "csrc" / layer).iterdir()):
            if path.suffix == ".c" or (path.suffix == ".h" and not path.with_suffix(".c").exists()):
                wanted.append(f"csrc/{layer}/{path.name}")
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


def test_csrc_holds_only_its_layers():
    assert sorted(p.name for p in (ROOT / "csrc").iterdir()) == ["binding", "core", "tests"]


def test_the_core_includes_nothing_of_python_or_of_the_binding():
    binding_headers = {p.name for p in (ROOT / "csrc" / "binding").glob("*.h")}
    for path in sorted((ROOT / "csrc" / "core").glob("*.[ch]")):
        included = set(re.findall(r'#\s*include\s*[<"]([^>"]+)[>"]', path.read_text()))
        assert "Python.h" not in included, path.name
        assert not included & binding_headers, (path.name, included & binding_headers)


def _binding_includes() -> dict:
    """Each binding .c file and the other binding .c files whose headers it includes."""
    binding = ROOT / "csrc" / "binding"
    graph = {}
    for path in sorted(binding.glob("*.c")):
        included = re.findall(r'#\s*include\s*"([^"]+)\.h"', path.read_text())
        graph[path.stem] = {name for name in included
                            if name != path.stem and (binding / f"{name}.c").exists()}
    return graph


def test_binding_files_depend_on_each_other_one_way():
    graph = _binding_includes()

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, seen + (n,)))
                   for n in graph[start])

    circles = sorted(f for f in graph if reaches(f, f))
    assert circles == [], f"binding files in an include circle: {circles}"


def test_binding_functions_carry_the_binding_prefix():
    # the core's functions are sp_*; those that need the GIL are sp_py_* (PyInit_ aside)
    for path in sorted((ROOT / "csrc" / "binding").glob("*.c")):
        text = path.read_text()
        defined = re.findall(r"^(?!static)[A-Za-z_][\w \*]*\n(\w+)\(", text, re.M)
        wrong = [name for name in defined if not name.startswith(("sp_py_", "PyInit_"))]
        assert wrong == [], (path.name, wrong)


def test_the_binding_reaches_into_no_endpoint():
    # the core's books are touched through its functions: no lock taken, no field read
    for path in sorted((ROOT / "csrc" / "binding").glob("*.c")):
        text = path.read_text()
        assert "pthread_mutex" not in text, path.name
        assert not re.search(r"\bep->", text), (path.name, re.findall(r".*\bep->.*", text)[:3])
