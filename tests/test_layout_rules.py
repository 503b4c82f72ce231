"""Rules of the test suite's layout, checked on its source.

A test file never imports another test file: pytest already imported it as a test module, so the import
runs its module-level code again, and a change to one test file breaks others that borrowed from it.
Shared plain helpers live in tests/helpers.py, shared fixtures in tests/conftest.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import in ``tree``, at any depth (inside functions too).
    ``from . import x`` gives ``x``: the name may be a module of the package."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                found.append((node.lineno, node.module))
            else:
                found.extend((node.lineno, alias.name) for alias in node.names)
    return sorted(found)


def is_test_module(name: str) -> bool:
    """Whether a dotted module name is a test module (``test_x``, ``tests.test_x``)."""
    return name.split(".")[-1].startswith("test_")


def cross_imports(path: Path, root: Path) -> list[str]:
    """``file:line: imports test_x`` (file relative to ``root``) for every import of a test module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{path.relative_to(root)}:{line}: imports {name}"
            for line, name in imported_modules(tree) if is_test_module(name)]


def test_no_test_file_imports_another_test_file():
    files = sorted(TESTS.glob("test_*.py"))
    assert len(files) > 10  # the glob found the suite: the check below is not vacuous
    problems = [problem for path in files for problem in cross_imports(path, TESTS.parent)]
    assert not problems, "a test file imports another test file (move what they share to tests/helpers.py " \
                         "or to a fixture in tests/conftest.py):\n" + "\n".join(problems)


def test_the_rule_sees_every_form_of_import(tmp_path):
    path = tmp_path / "test_example.py"
    path.write_text(
        "import os\n"
        "from helpers import results\n"
        "from test_reliability import results\n"
        "import test_loopback\n"
        "import tests.test_sweep as ts\n"
        "def f():\n"
        "    from test_pareto import run\n"  # inside a function
        "from . import test_spec, helpers\n"
        "from .test_cli import run\n"
        "from testing import test_helper_like_name\n"  # a name from a module that is not a test module
    )
    assert cross_imports(path, tmp_path) == [
        "test_example.py:3: imports test_reliability",
        "test_example.py:4: imports test_loopback",
        "test_example.py:5: imports tests.test_sweep",
        "test_example.py:7: imports test_pareto",
        "test_example.py:8: imports test_spec",
        "test_example.py:9: imports test_cli",
    ]
