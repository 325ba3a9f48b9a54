"""Guarded imports of optional libraries, with the "install the extra" message."""

from __future__ import annotations

import importlib
from types import ModuleType

from kaleem_telemetry.exceptions import MissingDependencyError

__all__ = ["import_optional", "missing_extra_message"]


def missing_extra_message(module: str, package: str, extra: str) -> str:
    """Return the message that tells a user which extra to install.

    Args:
        module: The kaleem_telemetry module that needs the package.
        package: The distribution name of the missing package.
        extra: The kaleem-telemetry extra that brings it in.
    """
    return (
        f"{module} needs the {package!r} package. "
        f"Install it with: pip install 'kaleem-telemetry[{extra}]'"
    )


def import_optional(
    name: str, *, module: str, package: str | None = None, extra: str | None = None
) -> ModuleType:
    """Import ``name`` or raise `MissingDependencyError` naming the extra.

    Args:
        name: The import name, for example ``"redis"``.
        module: The kaleem_telemetry module asking for it, used in the message.
        package: The distribution name; defaults to ``name``.
        extra: The extra to install; defaults to ``package``.

    Raises:
        MissingDependencyError: The library is not importable.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pkg = package or name
        msg = missing_extra_message(module, pkg, extra or pkg)
        raise MissingDependencyError(msg) from exc
