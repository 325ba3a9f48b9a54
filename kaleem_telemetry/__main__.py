"""Run the command-line interface: ``python -m kaleem_telemetry``."""

from __future__ import annotations

from kaleem_telemetry.cli import main

__all__: list[str] = []

raise SystemExit(main())
