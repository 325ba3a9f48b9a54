"""A minimal runnable Django project instrumented with kaleem-telemetry (see run.py)."""
