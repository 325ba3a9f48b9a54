"""The documentation is tested: links, the index, the reference tables and every python block.

Every ```python block in README.md and docs/*.md is one of three kinds:

* **A script** (the default): it runs on its own, in a fresh interpreter, in a
  temporary directory, and must exit with status 0. Show what a block produces
  with ``assert`` (or ``print``), so that running it checks the page.
* **A test module**: a block that defines a top-level ``test_*`` function runs
  under pytest, in a fresh interpreter, and every test in it must pass. The
  ``telemetry_capture`` fixture is there, as in any project that installs
  kaleem-telemetry.
* **A fragment**: a block that cannot run on its own (it needs a server, a DSN,
  a framework project, or the reader's own objects) is marked on purpose with
  an HTML comment on the line right before its opening fence::

      <!-- fragment: needs a running Redis -->

  ``<!-- fragment -->`` alone works too; the reason is for the next reader.
  A fragment must still be valid Python.

Blocks are independent: each one imports what it uses. They run with no backend
at all: ``OTEL_TRACES_EXPORTER=none``, no OTLP endpoint, no ``SENTRY_DSN``, no
metrics port, JSON logs, and sockets that may connect only to 127.0.0.1, ::1 and
Unix sockets (pytest-socket). A block that imports an optional library which is
not installed (``fastapi``, ``flask``, ``redis``...) is skipped.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import kaleem_telemetry
from kaleem_telemetry import tracing
from kaleem_telemetry._metric_specs import ALL_METRICS, markdown_table
from kaleem_telemetry.config import sdk_settings, settings_table
from kaleem_telemetry.metrics import TelemetryMetrics

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
CODE_PAGES = [page for page in PAGES if page.name != "CHANGELOG.md"]
REFERENCE = ROOT / "docs" / "reference.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*$")
FENCE_CLOSE = re.compile(r"^[ \t]*```[ \t]*$")
FRAGMENT = re.compile(r"^[ \t]*<!-- fragment(?:: [^>]*\S)? -->[ \t]*$")
VARIABLE = re.compile(r"\b(?:OTEL|SENTRY|KALEEM_TELEMETRY|PROMETHEUS)_[A-Z0-9_]*[A-Z0-9]\b")
EXTRA = re.compile(r"kaleem-telemetry\[([a-z0-9,-]+)\]")

#: Libraries a block may import that are not dependencies of kaleem-telemetry.
OPTIONAL = frozenset(
    {
        "aio_pika",
        "celery",
        "django",
        "fastapi",
        "flask",
        "gunicorn",
        "httpx",
        "pika",
        "psycopg",
        "pymongo",
        "redis",
        "requests",
        "sqlalchemy",
        "starlette",
        "uvicorn",
    }
)

#: Fragments whose pages do not carry the marker yet (docs/errors.md and
#: docs/web.md are being revised in another change): (page, a line of the block)
#: -> why it cannot run. An entry goes once its page has the marker.
# Runs a script block with connections limited to this machine, as pytest-socket
# does for the suite (pytest.ini options do not reach a plain interpreter).
_BOOTSTRAP = """\
import runpy, sys
import pytest_socket
pytest_socket.socket_allow_hosts(["127.0.0.1", "::1"], allow_unix_socket=True)
runpy.run_path(sys.argv[1], run_name="__main__")
"""


@dataclass(frozen=True)
class Block:
    """One ```python block of a page."""

    page: Path
    line: int  # of the opening fence, 1-based
    code: str
    fragment: bool

    @property
    def where(self) -> str:
        """The page and line of the block, as ``docs/page.md:12``."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def is_test_module(self) -> bool:
        """Whether the block defines a top-level ``test_*`` function."""
        return any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
            for node in ast.parse(self.code).body
        )

    def imports(self) -> set[str]:
        """Return the top-level names of the modules the block imports."""
        names = set()
        for node in ast.walk(ast.parse(self.code)):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        return names


def _blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        opening = FENCE_OPEN.match(lines[i])
        if opening is None:
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and not FENCE_CLOSE.match(lines[i]):
            i += 1
        code = textwrap.dedent("\n".join(lines[start + 1 : i])) + "\n"
        marked = start > 0 and FRAGMENT.match(lines[start - 1]) is not None
        blocks.append(Block(page, start + 1, code, marked))
        i += 1
    return blocks


BLOCKS = [block for page in CODE_PAGES for block in _blocks(page)]
RUNNABLE = [block for block in BLOCKS if not block.fragment]


def _block_env() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "SENTRY_", "KALEEM_TELEMETRY_", "PROMETHEUS_"))
        and name.lower() != "prometheus_multiproc_dir"
    }
    env.update(
        OTEL_TRACES_EXPORTER="none",
        KALEEM_TELEMETRY_LOG_FORMAT="json",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _pytest_ini() -> str:
    """Return the pytest configuration of a test block: warnings are errors, as in this suite."""
    lines = ["[pytest]", "filterwarnings = error"]
    if importlib.util.find_spec("pytest_asyncio") is not None:
        lines.append("asyncio_default_fixture_loop_scope = function")
    return "\n".join(lines) + "\n"


def _skip_if_missing_libraries(block: Block) -> None:
    missing = sorted(
        name for name in block.imports() & OPTIONAL if importlib.util.find_spec(name) is None
    )
    if missing:
        pytest.skip(f"{block.where} needs {', '.join(missing)}")


def _section(text: str, title: str) -> str:
    """Return the body of the ``## title`` section of a page."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    assert match is not None, f"no '## {title}' section"
    return match.group(1)


def _table_rows(text: str) -> list[list[str]]:
    """Return the body rows of the Markdown tables in ``text``, as lists of cells."""
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.startswith("|") or _SEPARATOR.fullmatch(line):
            continue
        if i + 1 < len(lines) and _SEPARATOR.fullmatch(lines[i + 1]):
            continue  # the header row
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


_SEPARATOR = re.compile(r"\|[\s|:-]+\|")


class TestDocs:
    @pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
    def test_relative_links_resolve(self, page):
        """Every relative link in the docs points to a file of the repository."""
        broken = [
            target
            for target in LINK.findall(page.read_text())
            if "://" not in target and not (page.parent / target).exists()
        ]

        assert broken == []

    def test_every_page_is_in_the_index(self):
        """docs/index.md links every page of docs/."""
        index = (ROOT / "docs" / "index.md").read_text()
        pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}

        assert {p for p in pages if f"({p})" not in index} == set()

    def test_readme_opens_with_the_two_commands(self):
        """The README's first two code blocks run the demo and the test suite."""
        blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)

        assert "nox -s demo" in blocks[0]
        assert "nox -s tests" in blocks[1]
        assert "nox -s tests" in (ROOT / ".ci" / "run").read_text()

    def test_readme_runs_every_example_by_its_path(self):
        """The README gives one command per runnable example, each naming an existing script."""
        readme = (ROOT / "README.md").read_text()
        commands = re.findall(r"`python (examples/\S+) --duration 5`", readme)
        scripts = {"examples/fastapi_app.py", "examples/flask_app.py", "examples/django_app/run.py"}

        assert set(commands) == scripts
        assert all((ROOT / script).is_file() for script in commands)

    def test_extras_named_in_the_docs_exist(self):
        """Every `kaleem-telemetry[extra]` in the docs is an extra of the distribution."""
        extras = set(importlib.metadata.metadata("kaleem-telemetry").get_all("Provides-Extra"))

        named = {
            extra
            for page in PAGES
            for group in EXTRA.findall(page.read_text())
            for extra in group.split(",")
        }

        assert named - extras == set()

    def test_readme_says_what_every_extra_enables(self):
        """The README's table of extras has one row per extra of the distribution."""
        extras = set(importlib.metadata.metadata("kaleem-telemetry").get_all("Provides-Extra"))
        rows = _table_rows((ROOT / "README.md").read_text())

        listed = {extra for row in rows for extra in re.findall(r"`\[([a-z0-9-]+)\]`", row[0])}

        assert listed == extras


class TestCodeBlocks:
    def test_blocks_are_found(self):
        """The block scanner finds the README's blocks, runnable ones and fragments."""
        readme = [block for block in BLOCKS if block.page.name == "README.md"]

        assert len(readme) >= 2
        assert any(block.is_test_module for block in RUNNABLE)
        assert any(block.fragment for block in BLOCKS)

    @pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
    def test_block_parses(self, block):
        """Every python block, fragments included, is valid Python."""
        ast.parse(block.code, filename=block.where)

    @pytest.mark.parametrize("block", RUNNABLE, ids=[block.where for block in RUNNABLE])
    def test_block_runs(self, block, block_runs):
        """Every python block that is not a fragment runs (or its tests pass), network-free."""
        _skip_if_missing_libraries(block)

        result = block_runs[block].result()

        output = f"{block.where}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert result.returncode == 0, output
        if block.is_test_module:
            summary = result.stdout.strip().splitlines()[-1]
            assert re.fullmatch(r"\d+ passed in [\d.]+s", summary), output


@pytest.fixture(name="block_runs", scope="module")
def _block_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[Block, Future[subprocess.CompletedProcess[str]]]]:
    """Start every selected runnable block at once, each in its own interpreter.

    The blocks are independent processes that mostly wait for imports, so running
    them side by side makes the page tests several times faster than one by one.
    """
    selected = {
        item.callspec.params["block"]
        for item in request.session.items
        if item.originalname == "test_block_runs" and hasattr(item, "callspec")
    }
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        yield {
            block: pool.submit(_run_block, block, tmp_path_factory.mktemp("block"))
            for block in RUNNABLE
            if block in selected
        }


def _run_block(block: Block, directory: Path) -> subprocess.CompletedProcess[str]:
    """Run one block in a fresh interpreter in ``directory``: as a script, or under pytest."""
    stem = re.sub(r"\W", "_", block.where).lower()
    if block.is_test_module:
        script = directory / f"test_{stem}.py"
        (directory / "pytest.ini").write_text(_pytest_ini(), encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--allow-hosts=127.0.0.1,::1",
            "--allow-unix-socket",
            str(script),
        ]
    else:
        script = directory / f"{stem}.py"
        command = [sys.executable, "-c", _BOOTSTRAP, str(script)]
    script.write_text(block.code, encoding="utf-8")
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=directory,
        env=_block_env(),
        timeout=90,
        check=False,
    )


class TestReference:
    """docs/reference.md states the contract; these keep it in step with the code."""

    def test_sections(self):
        """The reference has the sections the code's comments cite, in this order."""
        titles = re.findall(r"^## (.+)$", REFERENCE.read_text(), re.MULTILINE)

        assert titles == [
            "Public API",
            "Metrics",
            "Spans",
            "Logs",
            "Redaction",
            "Sentry",
            "Configuration",
            "Endpoints",
            "Shutdown",
        ]

    def test_metric_table_matches_the_registered_families(self):
        """The metric table lists every registered family: name, type, labels, buckets."""
        registry = CollectorRegistry()
        metrics = TelemetryMetrics(registry)
        for family in metrics.families:
            child = family.labels(*["x"] * len(family.labelnames))
            if hasattr(child, "observe"):
                child.observe(0)
        expected = {}
        for collected in registry.collect():
            name = collected.name + ("_total" if collected.type == "counter" else "")
            buckets = [
                float(sample.labels["le"])
                for sample in collected.samples
                if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf"
            ]
            expected[name] = (collected.type, [], buckets)
        for family in metrics.families:
            expected[family.name][1].extend(family.labelnames)

        documented = {}
        for row in _table_rows(_section(REFERENCE.read_text(), "Metrics")):
            name = row[0].strip("`")
            if not re.fullmatch(r"[a-z_]+", name):
                continue
            # Parenthesised notes, such as the values of a label, are not labels.
            labels = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", row[2]))
            buckets = [float(b) for b in row[3].split()]
            documented[name] = (row[1].split()[0].strip(","), labels, buckets)

        assert documented == expected

    def test_metric_table_is_generated_from_the_declarations(self):
        """The metric table is exactly what the metric declarations render."""
        section = _section(REFERENCE.read_text(), "Metrics")
        start = section.index("| metric |")
        table = section[start : section.index("\n\n", start) + 1]

        assert table == markdown_table(), (
            "docs/reference.md's metric table is stale: paste the output of "
            "markdown_table() from kaleem_telemetry/_metric_specs.py over it."
        )

    def test_every_declared_metric_is_named(self):
        """Every declared family is in Metrics, the ones outside the table too.

        The counters that the tracing pipeline and the exposition register by
        themselves are not rows of the table; a sentence names each.
        """
        metrics = _section(REFERENCE.read_text(), "Metrics")

        assert [spec.name for spec in ALL_METRICS if f"`{spec.name}`" not in metrics] == []
        assert f"`{tracing.SPANS_DROPPED_METRIC}_total`" in metrics

    def test_configuration_names_every_variable(self):
        """The Configuration section names every variable the package reads, and no other."""
        section = _section(REFERENCE.read_text(), "Configuration")
        own = {setting.env_var for setting in settings_table()}
        known = own | {setting.env_var for setting in sdk_settings()}

        named = set(VARIABLE.findall(section))

        assert own - named == set()
        assert set(VARIABLE.findall(REFERENCE.read_text())) - known == set()

    def test_public_api_lists_the_root_exports(self):
        """Every name of ``kaleem_telemetry.__all__`` is in the Public API section."""
        section = _section(REFERENCE.read_text(), "Public API")
        listed = set(re.findall(r"`([A-Za-z_][\w.]*)", section))

        assert set(kaleem_telemetry.__all__) - listed == set()

    def test_public_api_names_resolve_unless_planned(self):
        """Each name in the Public API table is importable, unless its row says it is planned."""
        rows = _table_rows(_section(REFERENCE.read_text(), "Public API"))
        checked = [
            name
            for row in rows
            if not row[1].startswith("**Planned")
            for name in re.findall(r"`([A-Za-z_][\w.]*)", row[0])
        ]

        assert "setup_telemetry" in checked
        assert [name for name in checked if not _resolves(name)] == []


def _resolves(name: str) -> bool:
    """Tell whether ``name`` (relative to ``kaleem_telemetry``, or dotted from it) exists.

    A name whose module needs an optional library that is not installed counts as
    existing: without the library there is nothing to check.
    """
    dotted = name if name.startswith("kaleem_telemetry") else f"kaleem_telemetry.{name}"
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] in OPTIONAL:
                return True
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False
