"""docs/ARCHITECTURE.md's import rules, checked on the source with ``ast`` (nothing is imported to check them).

Every ``import`` counts, at module level or inside a function: a lazy import still ties two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIELAB = Path(__file__).resolve().parent.parent / "pielab"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PIELAB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PIELAB.rglob("*.py"))}
# Kept at their old paths only because pickles in existing sweep folders name them (docs/ARCHITECTURE.md).
ALIASES = {"pielab.sweep.folder", "pielab.sweep.storage", "pielab.sweep.lease", "pielab.sweep.dblease",
           "pielab.sweep.started_spec", "pielab.sweep.space", "pielab.sweep.spec"}


def _imports(name: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement of module ``name``: pielab modules resolved to the
    most specific module that exists (``from pielab.folder import layout`` -> ``pielab.folder.layout``),
    other packages by their top-level name."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES]
            out += [(m, node.lineno) for m in subs] if subs and len(subs) == len(node.names) else [(module, node.lineno)]
    resolved = []
    for module, line in out:
        if module == "pielab" or module.startswith("pielab."):
            while module not in MODULES and "." in module:
                module = module.rpartition(".")[0]
        else:
            module = module.split(".")[0]
        resolved.append((module, line))
    return resolved


def _graph() -> dict[str, set[str]]:
    return {name: {m for m, _ in _imports(name) if m in MODULES and m != name} for name in MODULES}


def test_no_import_cycle_in_pielab():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles in pielab/:\n" + "\n".join(cycles)


def _in(prefixes: tuple[str, ...]) -> list[str]:
    return [n for n in MODULES if any(n == p or n.startswith(p + ".") for p in prefixes)]


@pytest.mark.parametrize("layer, forbidden", [
    # the sweep folder: below data/ and train.py, readable on a machine with none of the engines
    (("pielab.folder",), ("ray", "optuna", "wandb", "torch", "pielab.sweep", "pielab.cli", "pielab.report",
                          "pielab.train", "pielab.data", "pielab.models", "pielab.config", "pielab.api")),
    # `pielab train` must run on a machine that has only torch
    (("pielab.train", "pielab.models", "pielab.data", "pielab.config"),
     ("ray", "optuna", "wandb", "pielab.sweep", "pielab.cli", "pielab.report", "pielab.api")),
    # a spec is checked before Ray starts (Optuna only for a space's distributions)
    (("pielab.spec",), ("ray", "wandb", "pielab.sweep", "pielab.cli", "pielab.report", "pielab.train", "pielab.api")),
    # reports are made from a folder copied off the cluster, without Ray (Optuna only for its figures)
    (("pielab.report",), ("ray", "wandb", "pielab.sweep", "pielab.cli", "pielab.api")),
    # the engine and the reader never call back up into the commands or the Python API
    (("pielab.sweep",), ("pielab.cli", "pielab.api")),
    # the Python API sits under the commands: it raises, they print
    (("pielab.api",), ("wandb", "pielab.cli")),
    # pielab.load_sweep in a process without Ray (and Optuna only when Sweep.study() asks, via report.tables)
    (("pielab.api.reading",), ("ray", "optuna", "wandb", "pielab.sweep", "pielab.cli", "pielab.api.launching")),
])
def test_layers_import_only_what_is_below_them(layer, forbidden):
    found = [f"{MODULES[n].relative_to(PIELAB.parent)}:{line}: imports {m}"
             for n in _in(layer) if n not in ALIASES for m, line in _imports(n)
             if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not found, "\n".join(found)


def test_the_folder_package_imports_only_the_shared_helpers():
    allowed = ("pielab.folder", "pielab.errors", "pielab.files", "pielab.text", "pielab.yamlfile", "pielab")
    found = [f"{MODULES[n].relative_to(PIELAB.parent)}:{line}: imports {m}" for n in _in(("pielab.folder",))
             for m, line in _imports(n) if m.startswith("pielab") and not any(
                 m == a or m.startswith(a + ".") for a in allowed)]
    assert not found, "\n".join(found)


def test_the_aliases_at_old_paths_only_point_at_their_new_home():
    for name in ALIASES:
        targets = {m for m, _ in _imports(name) if m.startswith("pielab")}
        assert targets and all(t.startswith(("pielab.folder", "pielab.spec")) or t in ("pielab.errors", "pielab.text")
                               for t in targets), (name, targets)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_sub_package_holds_more_than_35_percent_of_the_code():
    total = sum(_lines(p) for p in MODULES.values())
    by_package: dict[str, int] = {}
    for name, path in MODULES.items():
        parts = name.split(".")
        if len(parts) > 2 or path.name == "__init__.py" and len(parts) == 2:
            by_package[parts[1]] = by_package.get(parts[1], 0) + _lines(path)
    largest = max(by_package, key=by_package.get)
    share = by_package[largest] / total
    assert share <= 0.35, f"pielab/{largest}/ holds {share:.0%} of pielab's {total} lines: {by_package}"


def _named_in_architecture() -> set[str]:
    """The module files docs/ARCHITECTURE.md names: ``pielab/a/b.py``, and in the same line bare ``c.py`` beside
    it (the same folder) or ``pielab/a/{b,c}.py``."""
    import re

    named = set()
    for line in (PIELAB.parent / "docs" / "ARCHITECTURE.md").read_text().splitlines():
        folder = None
        for token in re.findall(r"`([^`\s]+?\.py)`", line):
            if token.startswith("pielab/"):
                braces = re.fullmatch(r"(pielab/(?:[\w]+/)*)\{([\w,]+)\}\.py", token)
                if braces:
                    folder = braces[1]
                    named.update(f"{folder}{n}.py" for n in braces[2].split(","))
                    continue
                folder = token.rpartition("/")[0] + "/"
                named.add(token)
            elif folder and "/" not in token:
                named.add(folder + token)
            elif token.split("/")[0] in {d.name for d in PIELAB.iterdir() if d.is_dir()}:
                named.add("pielab/" + token)  # sweep/folder_writer.py: a module under pielab/
    return named


def test_architecture_names_every_module_and_only_modules_that_exist():
    named = _named_in_architecture()
    files = {str(p.relative_to(PIELAB.parent)) for p in MODULES.values()}
    missing = sorted(f for f in named if f not in files)
    assert not missing, f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"
    packages = {"pielab/models/", "pielab/data/", "pielab/report/"}  # named as a package, not file by file
    unnamed = sorted(f for f in files if f not in named and not f.endswith(("__init__.py", "__main__.py"))
                     and not any(f.startswith(p) for p in packages))
    assert not unnamed, f"docs/ARCHITECTURE.md does not say what these modules own: {unnamed}"
