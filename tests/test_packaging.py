import ast
import importlib
import importlib.metadata
import json
import os
import pkgutil
import re
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
    "pika",
    "aio_pika",
    "celery",
    "sentry_sdk",
    "grpc",
    "opentelemetry.exporter",
    "uvicorn",
    "gunicorn",
]


#: The public names of the package root; adding or removing one is an API change.
ROOT_API = [
    "MissingDependencyError",
    "RetryJob",
    "Telemetry",
    "TelemetryConfig",
    "TelemetryConfigError",
    "TelemetryError",
    "__version__",
    "bind_context",
    "business_event",
    "capture_exception",
    "clear_context",
    "declare_business_labels",
    "extract_context",
    "get_context",
    "get_logger",
    "inject_context",
    "instrument",
    "instrument_app",
    "instrument_job",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "record_cache",
    "setup_telemetry",
    "shutdown_telemetry",
    "start_metrics_server",
    "telemetry_context",
    "track_cache",
    "track_db",
]

# In a message, `name()` is a call and `kaleem_telemetry.a.B` a dotted name.
_CALL = re.compile(r"(?<![\w.`])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\(\)")
_DOTTED = re.compile(r"\bkaleem_telemetry(?:\.[A-Za-z_]\w*)+")


def _messages(path: Path) -> list[tuple[int, str]]:
    """Return the sentences (string literals with a space, docstrings left out) of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(part) for part in node.values)
            text = "".join(
                part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
            found.append((node.lineno, text))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            found.append((node.lineno, node.value))
    return [(line, text) for line, text in found if " " in text.strip()]


def _named_in_messages() -> list[tuple[str, str, bool]]:
    """Return (module, name, about_the_failed_call) for each name a message tells users of."""
    names = set()
    for path in sorted((ROOT / "kaleem_telemetry").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for _, text in _messages(path):
            for match in _CALL.finditer(text):
                names.add((module, match.group(1), text.startswith(match.group(0))))
            for match in _DOTTED.finditer(text):
                names.add((module, match.group(0), False))
    return sorted(names)


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and return the attribute it names."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


MESSAGE_NAMES = _named_in_messages()


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

    def test_root_exports_exactly_the_pinned_names(self):
        """The package root exports the pinned public names, no more and no fewer."""
        assert kaleem_telemetry.__all__ == ROOT_API

    def test_messages_name_something(self):
        """The message scan below finds the names the package's messages tell users about."""
        names = {name for _, name, _ in MESSAGE_NAMES}

        assert {"declare_business_labels", "kaleem_telemetry.asgi.TelemetryMiddleware"} <= names

    @pytest.mark.parametrize(
        ("module", "name", "failed_call"),
        MESSAGE_NAMES,
        ids=[f"{module}:{name}" for module, name, _ in MESSAGE_NAMES],
    )
    def test_a_name_a_message_tells_of_is_importable(self, module, name, failed_call):
        """A name a message tells users to call or import is importable from where it says.

        A dotted name must resolve as written. A bare ``name()`` must be importable from
        ``kaleem_telemetry``, unless the message starts with it: then it names the call
        that failed, which may live in the message's own module.
        """
        if "." in name:
            assert _resolve(name) is not None
        elif failed_call:
            assert hasattr(kaleem_telemetry, name) or hasattr(_resolve(module), name)
        else:
            assert name in kaleem_telemetry.__all__, f"{module} tells users to call {name}()"

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
