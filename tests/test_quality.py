"""The code-quality gates run as tests, so the README's test command enforces them."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    if shutil.which(name) is None and not (Path(sys.executable).parent / name).exists():
        pytest.fail(f"{name} is not installed; install the 'lint' and 'typing' dependency groups")
    return [sys.executable, "-m", name]


class TestQualityGates:
    def test_ruff_check(self):
        """Ruff finds nothing to report in the repository."""
        result = subprocess.run(
            [*_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300
        )

        assert result.returncode == 0, result.stdout + result.stderr

    def test_ruff_format(self):
        """The repository is formatted as ruff format would write it."""
        result = subprocess.run(
            [*_tool("ruff"), "format", "--check", "."],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

        assert result.returncode == 0, result.stdout + result.stderr

    def test_mypy_strict(self):
        """Mypy --strict passes on the package and tests/typing."""
        # The package's typed glue imports the optional libraries under
        # TYPE_CHECKING; without the extras installed (nox -s tests_bare) mypy
        # cannot see them, and the check belongs to the full run.
        for library in ("fastapi", "flask", "django", "redis", "sqlalchemy", "pymongo", "uvicorn"):
            pytest.importorskip(library)
        result = subprocess.run(
            [*_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600
        )

        assert result.returncode == 0, result.stdout + result.stderr
