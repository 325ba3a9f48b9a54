"""Run the Django demo: serve it on 127.0.0.1, drive traffic at it, keep serving a while.

    python examples/django_app/run.py                 # serves 10 s, then stops
    python examples/django_app/run.py --duration 0    # serves until Ctrl-C

Logs are JSON lines on stdout; spans go to stderr unless
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Needs ``pip install 'kaleem-telemetry[django]'``.
In production, serve ``instrument_app(get_wsgi_application())`` from your
project's ``wsgi.py`` with gunicorn, or list ``kaleem_telemetry.django.TelemetryMiddleware``
in ``MIDDLEWARE``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# examples/ on the path: the django_app package and the shared _serve helper.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")

from _serve import run_example
from django.core.wsgi import get_wsgi_application

from kaleem_telemetry import instrument_app, setup_telemetry

if __name__ == "__main__":
    setup_telemetry(
        service_name="kaleem-django-demo",
        traces_exporter="otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "console",
    )
    raise SystemExit(
        run_example(
            instrument_app(get_wsgi_application()),
            paths=[
                "/items/1/",
                "/merchants/m-1/orders/7/",
                "/archive/2024/",
                "/fail/",
                "/nope/",
                "/health/live",
                "/health/ready",
            ],
        )
    )
