"""Settings of the Django demo: the telemetry middleware and nothing else."""

from __future__ import annotations

SECRET_KEY = "demo-only-not-a-secret"  # a demo key, never deployed
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "django_app.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True
# setup_telemetry() owns logging: Django must not install its own handlers.
LOGGING_CONFIG = None
MIDDLEWARE = [
    # Tells the WSGI middleware the route template and the view's exception;
    # on its own (without instrument_app) it would do the whole job.
    "kaleem_telemetry.django.TelemetryMiddleware",
]
