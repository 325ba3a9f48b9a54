"""Writing the generated data: JSON for Grafana, YAML for Prometheus, byte-stable.

The YAML writer handles the plain data the generators build (dicts, lists,
strings, numbers, booleans) and quotes every string the way JSON does, which is a
valid YAML double-quoted scalar; no YAML library is needed.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

__all__ = ["to_json", "to_yaml", "write_dashboards", "write_rules"]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
# Words YAML 1.1 readers take for booleans or null: quoted even as keys.
_SPECIAL = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def to_json(data: Any) -> str:
    """Return ``data`` as indented JSON with sorted keys and a final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def to_yaml(data: Any) -> str:
    """Return ``data`` as block-style YAML (mapping keys in insertion order)."""
    lines: list[str] = []
    _emit(data, 0, lines)
    return "\n".join(lines) + "\n"


def write_dashboards(dashboards: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """Write each dashboard to ``out/<name>.json``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(dashboards):
        path = out / f"{name}.json"
        path.write_text(to_json(dashboards[name]), encoding="utf-8")
        written.append(path)
    return written


def write_rules(files: dict[str, Any], out: Path) -> list[Path]:
    """Write each rule file to ``out/<name>``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(files):
        path = out / name
        path.write_text(to_yaml(files[name]), encoding="utf-8")
        written.append(path)
    return written


def _key(key: Any) -> str:
    text = str(key)
    if _PLAIN_KEY.fullmatch(text) and text.lower() not in _SPECIAL:
        return text
    return json.dumps(text, ensure_ascii=False)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"cannot write {value!r} as YAML"
            raise ValueError(msg)
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    msg = f"cannot write {type(value).__name__} as YAML"
    raise TypeError(msg)


def _emit(data: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(data, dict):
        if not data:
            lines.append(pad + "{}")
        for key, value in data.items():
            _entry(f"{pad}{_key(key)}:", value, indent, lines)
    elif isinstance(data, list):
        if not data:
            lines.append(pad + "[]")
        for item in data:
            if isinstance(item, dict) and item:
                first = True
                for key, value in item.items():
                    head = f"{pad}- " if first else f"{pad}  "
                    _entry(f"{head}{_key(key)}:", value, indent + 2, lines)
                    first = False
            else:
                _entry(f"{pad}-", item, indent, lines)
    else:
        lines.append(pad + _scalar(data))


def _entry(head: str, value: Any, indent: int, lines: list[str]) -> None:
    if isinstance(value, (dict, list)) and value:
        lines.append(head)
        _emit(value, indent + 2, lines)
    elif isinstance(value, dict):
        lines.append(head + " {}")
    elif isinstance(value, list):
        lines.append(head + " []")
    else:
        lines.append(f"{head} {_scalar(value)}")
