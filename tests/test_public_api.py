"""The public surface is what docs/reference.md (Public API) says, and nothing more.

Every public module (a name without a leading underscore) declares in ``__all__``
exactly the names the Public API section gives it, so a test hook or an internal
helper cannot become public API by accident, and a documented name cannot go
missing.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import kaleem_telemetry

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
# Modules with nothing to import: the console script's ``python -m`` entry, and
# the pytest plugin, whose fixture is reached by name.
NOTHING_TO_IMPORT = {"kaleem_telemetry.__main__", "kaleem_telemetry.pytest_plugin"}


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(kaleem_telemetry.__path__, "kaleem_telemetry."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return sorted(names)


def _public_api_section() -> str:
    text = REFERENCE.read_text()
    start = text.index("## Public API")
    return text[start : text.index("\n## ", start + 1)]


def _documented(module: str) -> set[str]:
    """Names the Public API section gives ``module``.

    A row (or line) that names ``kaleem_telemetry.<module>.<name>`` documents that
    name; the other back-quoted identifiers of the same row document names of that
    module too (the health row lists its functions plainly).
    """
    prefix = f"{module}."
    names: set[str] = set()
    for line in _public_api_section().splitlines():
        qualified = re.findall(rf"`{re.escape(prefix)}([A-Za-z_]\w*)", line)
        if not qualified:
            continue
        if "**Planned" in line:
            continue
        names.update(qualified)
        names.update(re.findall(r"`([A-Za-z_]\w*)`", line))
    return names


MODULES = _public_modules()


def test_every_public_module_is_found() -> None:
    """The walk finds the package's public modules (so the tests below check something)."""
    assert {"kaleem_telemetry.asgi", "kaleem_telemetry.metrics", "kaleem_telemetry.health"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", [m for m in MODULES if m not in NOTHING_TO_IMPORT])
def test_all_is_what_the_reference_documents(module: str) -> None:
    """``__all__`` holds documented names only, and every name documented for the module."""
    mod = importlib.import_module(module)
    exported = set(mod.__all__)
    documented = _documented(module)
    root = {name for name in kaleem_telemetry.__all__ if name in exported}

    undocumented = exported - documented - root
    # A submodule the reference names through its parent (integrations.pika) is
    # an attribute of the parent once imported, not one of its exports.
    missing = {
        name
        for name in documented
        if hasattr(mod, name) and not inspect.ismodule(getattr(mod, name))
    } - exported

    assert undocumented == set(), f"{module} exports names the reference does not document"
    assert missing == set(), f"{module} does not export names the reference documents"
    # Names the reference gives the module, that the module does not have at all.
    assert {
        name
        for name in re.findall(rf"`{re.escape(module)}\.([A-Za-z_]\w*)", _public_api_section())
        if not hasattr(mod, name) and importlib.util.find_spec(f"{module}.{name}") is None
    } == set()


@pytest.mark.parametrize("module", sorted(NOTHING_TO_IMPORT))
def test_entry_modules_export_nothing(module: str) -> None:
    """The ``python -m`` entry and the pytest plugin have an empty ``__all__``."""
    # Read, not imported: importing __main__ runs the command line.
    source = Path(kaleem_telemetry.__file__).with_name(module.split(".")[-1] + ".py").read_text()
    declared = []
    for node in ast.parse(source).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign):
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "__all__":
            declared.append(node.value)

    assert [ast.literal_eval(value) for value in declared if value is not None] == [[]]
