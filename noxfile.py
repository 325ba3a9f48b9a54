"""Development sessions: lint, typecheck, tests, demo, benchmarks, build.

Run ``nox -l`` to list them; ``nox`` alone runs the default ones.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.needs_version = ">=2025.02.09"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests", "tests_bare"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
EXTRAS = [
    "redis",
    "pymongo",
    "sqlalchemy",
    "httpx",
    "requests",
    "pika",
    "aio-pika",
    "celery",
    "fastapi",
    "flask",
    "django",
]


def _install_tests(session: nox.Session, target: str, *pins: str) -> None:
    groups = nox.project.dependency_groups(PYPROJECT, "tests", "typing", "lint")
    session.install(target, *groups, *pins)


@nox.session
def lint(session: nox.Session) -> None:
    """Run the pre-commit hooks (ruff check and format, file checks) and mypy --strict."""
    session.install("-e", ".[all]", *nox.project.dependency_groups(PYPROJECT, "lint", "typing"))
    session.run("pre-commit", "run", "--all-files", "--show-diff-on-failure", *session.posargs)
    session.run("mypy")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Run mypy --strict on the package and tests/typing."""
    session.install("-e", ".[all]", *nox.project.dependency_groups(PYPROJECT, "typing"))
    session.run("mypy", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite with every extra installed, under coverage."""
    _install_tests(session, "-e.[all]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report", "--fail-under=85")


@nox.session
def tests_bare(session: nox.Session) -> None:
    """Run the suite with no extras: integration modules skip, the core must still pass."""
    _install_tests(session, "-e.")
    session.run("pytest", "-q", *session.posargs)


@nox.session(default=False)
@nox.parametrize("extra", EXTRAS)
def tests_extra(session: nox.Session, extra: str) -> None:
    """Run the suite with one extra at a time, proving each works alone."""
    _install_tests(session, f"-e.[{extra}]")
    session.run("pytest", "-q", *session.posargs)


@nox.session(default=False, venv_backend="uv", reuse_venv=False)
def tests_latest(session: nox.Session) -> None:
    """Run the suite on the newest release of every dependency and extra, nothing pinned.

    A fresh environment each time, resolved anew: what a user who runs
    ``pip install 'kaleem-telemetry[all]'`` today gets (FastAPI 0.165 and later
    began tracing by itself; a locked set would not have noticed).
    """
    groups = nox.project.dependency_groups(PYPROJECT, "tests", "typing", "lint")
    session.install("--upgrade", "-e.[all]", *groups)
    session.run("python", "-c", _VERSIONS_SCRIPT)
    session.run("pytest", "-q", *session.posargs)


@nox.session(default=False, venv_backend="uv", reuse_venv=False)
def tests_oldest(session: nox.Session) -> None:
    """Run the suite on the oldest release of every dependency and extra pyproject.toml accepts.

    uv's ``lowest-direct`` resolution takes the floor of each of the package's
    own requirements, the extras' included (FastAPI before it traced by
    itself, Starlette, Flask, Django), and what those floors need.
    """
    groups = nox.project.dependency_groups(PYPROJECT, "tests", "typing", "lint")
    session.install(*groups)
    session.install("--resolution=lowest-direct", "-e.[all]")
    session.run("python", "-c", _VERSIONS_SCRIPT)
    # mypy reads the installed libraries' annotations, which older releases spell
    # differently; the typing gate runs against current releases (nox -s tests).
    mypy_gate = "tests/test_quality.py::TestQualityGates::test_mypy_strict"
    # prometheus-client before 0.26 leaves its multiprocess value files to the
    # garbage collector when a test switches multiprocess mode off, and the
    # unclosed-file warning lands on whichever test runs then (values are right).
    # The strict unraisable-exception gate stays in nox -s tests.
    unclosed = "ignore::pytest.PytestUnraisableExceptionWarning"
    session.run("pytest", "-q", "--deselect", mypy_gate, "-W", unclosed, *session.posargs)


_VERSIONS_SCRIPT = """
import importlib.metadata as m
names = ["opentelemetry-sdk", "prometheus-client", "structlog", "sentry-sdk", "fastapi",
         "starlette", "flask", "django", "uvicorn", "gunicorn", "redis", "sqlalchemy"]
print("versions under test: " + ", ".join(f"{n} {m.version(n)}" for n in names))
"""


@nox.session(python=nox.project.python_versions(PYPROJECT), default=False)
def tests_pythons(session: nox.Session) -> None:
    """Run the suite on every supported Python found on this machine."""
    _install_tests(session, "-e.[all]")
    session.run("pytest", "-q", *session.posargs)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """Run the demo service: serves traffic to itself, prints JSON logs, exposes /metrics."""
    session.install("-e.[demo]")
    session.run("kaleem-telemetry", "demo", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Compare the library with the bare app and the hand-assembled stack, as ratios."""
    session.install("-e.[all]", *nox.project.dependency_groups(PYPROJECT, "bench"))
    for script in sorted(os.listdir("benchmarks")):
        if script.startswith("bench_") and script.endswith(".py"):
            session.run("python", f"benchmarks/{script}", *session.posargs)


@nox.session(default=False)
def soak(session: nox.Session) -> None:
    """Send 200,000 requests through uvicorn, full telemetry; fail if RSS, fds or threads grow."""
    _install_tests(session, "-e.[all]")
    session.run("python", "benchmarks/soak.py", *session.posargs)


@nox.session(default=False)
def docs(session: nox.Session) -> None:
    """Run every example and the docs checks (the examples are also run by the tests)."""
    _install_tests(session, "-e.[all]")
    session.run("pytest", "-q", "tests/test_examples.py", "tests/test_docs.py", *session.posargs)


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build sdist and wheel, check them, and import the wheel in a fresh environment."""
    session.install("build", "twine")
    shutil.rmtree("dist", ignore_errors=True)
    session.run("python", "-m", "build")
    session.run("twine", "check", "dist/*")
    wheel = next(name for name in os.listdir("dist") if name.endswith(".whl"))
    session.install(f"dist/{wheel}", "--force-reinstall")
    session.run("python", "-c", "import kaleem_telemetry; print(kaleem_telemetry.__version__)")
