import importlib
import importlib.metadata
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import kaleem_telemetry

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = [
    "starlette",
    "fastapi",
    "flask",
    "django",
    "redis",
    "pymongo",
    "sqlalchemy",
    "httpx",
    "requests",
    "aio_pika",
    "celery",
    "sentry_sdk",
    "grpc",
    "opentelemetry.exporter",
    "uvicorn",
    "gunicorn",
]


def _modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(kaleem_telemetry.__path__, "kaleem_telemetry.")
        if not info.name.endswith("__main__")
    )


class TestPublicAPI:
    def test_all_is_sorted_and_resolves(self):
        """The root __all__ is sorted and every name in it exists."""
        names = kaleem_telemetry.__all__

        assert names == sorted(names)
        for name in names:
            assert hasattr(kaleem_telemetry, name), name

    @pytest.mark.parametrize("module", _modules())
    def test_every_module_declares_all(self, module):
        """Every module, private ones included, declares __all__ and its names resolve."""
        if module.endswith("_demo"):
            pytest.importorskip("fastapi")
            pytest.importorskip("uvicorn")
        mod = importlib.import_module(module)

        assert isinstance(mod.__all__, list | tuple)
        for name in mod.__all__:
            assert hasattr(mod, name), f"{module}.{name}"

    def test_version_matches_the_installed_metadata(self):
        """__version__ is the version the distribution was installed with."""
        assert kaleem_telemetry.__version__ == importlib.metadata.version("kaleem-telemetry")

    def test_py_typed_is_shipped(self):
        """The package ships the PEP 561 marker."""
        assert (ROOT / "kaleem_telemetry" / "py.typed").exists()


class TestImportCost:
    def test_import_leaves_optional_libraries_out(self):
        """A fresh `import kaleem_telemetry` imports no framework, client, exporter or Sentry."""
        code = (
            "import json, sys; import kaleem_telemetry; "
            f"print(json.dumps([m for m in {OPTIONAL!r} if m in sys.modules]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        ).stdout

        assert json.loads(out) == []

    def test_pytest_plugin_is_cheap(self):
        """Importing the pytest plugin sets nothing up and imports no optional library."""
        code = (
            "import json, sys; import kaleem_telemetry.pytest_plugin; "
            "from kaleem_telemetry import _setup; "
            f"print(json.dumps([[m for m in {OPTIONAL!r} if m in sys.modules], "
            "_setup.current() is None]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout

        assert json.loads(out) == [[], True]
