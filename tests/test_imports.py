"""The import arrows between the layers run one way (docs/architecture.md).

Read from the source files with ``ast``, so that an import inside a function,
or one only made for type checking, counts as well as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: (package whose modules are read, module prefix they must not import, why)
FORBIDDEN = (
    (
        "broker/service",
        "ddm_bridge",
        "the broker service reaches data management only "
        "through the job states the DDM bridge acts on",
    ),
    ("ddm_bridge", "broker.service", "the bridge calls job operations, never a handler"),
    ("broker/operations", "broker.service", "job operations sit below the handlers"),
    ("broker/operations", "ddm_bridge", "job operations sit below the bridge"),
    ("broker/store", "broker.metrics", "the store's metrics hang on hooks (broker.store.hooks)"),
    ("broker/store", "broker.observability", "the store's metrics hang on hooks"),
)


def imported(path: Path) -> list[tuple[int, str]]:
    """Each module that ``path`` imports, with the line that imports it."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def within(module: str, prefix: str) -> bool:
    """Whether ``module`` is ``prefix`` or a module inside it."""
    return module == prefix or module.startswith(f"{prefix}.")


def crossings(package: str, prefix: str) -> list[str]:
    """Every import of ``prefix`` by a module of ``package``, as ``file:line module``."""
    return [
        f"{path.relative_to(ROOT)}:{line} {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in imported(path)
        if within(module, prefix)
    ]


@pytest.mark.parametrize(("package", "prefix", "why"), FORBIDDEN)
def test_no_import_against_the_layers(package: str, prefix: str, why: str) -> None:
    # Given the package's source files, when their imports are read, then none is of prefix
    assert (ROOT / package).is_dir()
    assert crossings(package, prefix) == [], f"{package} must not import {prefix}: {why}"


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    # Given a module that imports ddm_bridge only inside a function
    module = tmp_path / "late.py"
    module.write_text("def f() -> None:\n    from ddm_bridge import se\n")
    # When its imports are read, then that import is found, with its line
    assert (2, "ddm_bridge") in imported(module)
    assert any(within(m, "ddm_bridge") for _, m in imported(module))
