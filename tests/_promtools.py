"""Finding Debian's prometheus tools: skip naming the package, or fail under CI=true."""

from __future__ import annotations

import os
import shutil

import pytest

PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}


def tool(name: str) -> str:
    """Return the path of ``name``; skip (or fail under ``CI=true``) when it is missing."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian package '{PACKAGES[name]}'; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path
