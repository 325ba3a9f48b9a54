import re

import pytest

from kaleem_telemetry._http import (
    access_level,
    generate_request_id,
    normalise_method,
    request_id_or_new,
    route_template,
    status_label,
)


class TestRouteTemplate:
    @pytest.mark.parametrize(
        ("raw", "template"),
        [
            ("/items/{item_id}", "/items/{item_id}"),
            ("/items/{item_id:int}", "/items/{item_id}"),
            ("/files/{path:path}", "/files/{path}"),
            ("/items/<int:item_id>", "/items/{item_id}"),
            ("/items/<item_id>", "/items/{item_id}"),
            ("items/<int:item_id>/", "/items/{item_id}"),
            (
                "merchants/<str:merchant_id>/orders/<uuid:order_id>/",
                "/merchants/{merchant_id}/orders/{order_id}",
            ),
            ("/", "/"),
            ("", "/"),
            ("^archive/(?P<year>[0-9]{4})/$", "^archive/(?P<year>[0-9]{4})/$"),
        ],
    )
    def test_one_form_for_every_framework(self, raw, template):
        """Starlette, Flask and Django templates all come out as /items/{item_id}; regexes stay."""
        assert route_template(raw) == template


class TestMethods:
    @pytest.mark.parametrize(
        "method", ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
    )
    def test_standard_methods_are_kept(self, method):
        """A standard method is its own label."""
        assert normalise_method(method) == method

    @pytest.mark.parametrize("method", ["PROPFIND", "get", "FOO" * 50, "", "GET\r\n"])
    def test_other_methods_are_folded(self, method):
        """Anything else, lower-case included, is _OTHER."""
        assert normalise_method(method) == "_OTHER"


class TestRequestId:
    @pytest.mark.parametrize("value", ["abc", "r-1.2:3_x", "A" * 128, b"bytes-id"])
    def test_valid_ids_are_kept(self, value):
        """An id matching ^[A-Za-z0-9._:-]{1,128}$ is kept as is."""
        expected = value.decode() if isinstance(value, bytes) else value

        assert request_id_or_new(value) == expected

    @pytest.mark.parametrize(
        "value", [None, "", "A" * 129, "has space", "semi;colon", "<script>", "\u00e9", b"\xff"]
    )
    def test_invalid_ids_are_replaced(self, value):
        """A missing or hostile id is replaced by a new 32-hex one."""
        new = request_id_or_new(value)

        assert re.fullmatch(r"[0-9a-f]{32}", new)

    def test_generated_ids_are_unique(self):
        """Generated ids do not repeat."""
        assert len({generate_request_id() for _ in range(1000)}) == 1000


class TestLabels:
    @pytest.mark.parametrize(
        ("status", "level"),
        [
            (200, "info"),
            (302, "info"),
            (404, "warning"),
            (499, "warning"),
            (500, "error"),
            (503, "error"),
        ],
    )
    def test_access_level(self, status, level):
        """2xx/3xx are info, 4xx warning, 5xx error."""
        assert access_level(status) == level

    def test_status_label_is_a_string(self):
        """The status label is the code as a string."""
        assert status_label(404) == "404"


class TestRequestIdRandomness:
    def test_the_applications_random_sequence_is_untouched(self):
        """Generating request ids does not advance the module-level random generator."""
        import random

        random.seed(1234)
        expected = random.random()
        random.seed(1234)
        for _ in range(10):
            generate_request_id()

        assert random.random() == expected

    def test_forked_children_get_different_ids(self):
        """Two processes forked from one parent do not generate the same request ids."""
        import os

        generate_request_id()
        ids = []
        for _ in range(2):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                os.write(write, generate_request_id().encode())
                os._exit(0)
            os.close(write)
            ids.append(os.read(read, 64).decode())
            os.close(read)
            os.waitpid(pid, 0)

        assert ids[0] != ids[1]


class TestExemplarRefresh:
    """A bucket's trace_id exemplar is replaced at most once per refresh interval."""

    @staticmethod
    def _exemplars(registry) -> dict[str, str]:
        return {
            sample.labels["le"]: sample.exemplar.labels["trace_id"]
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "http_request_duration_seconds_bucket" and sample.exemplar
        }

    def test_a_fresh_exemplar_stands_then_a_stale_one_is_replaced(self, registry, monkeypatch):
        """Within the interval the first exemplar stays; after it, the next sampled one wins."""
        from kaleem_telemetry import _http, metrics

        clock = [1000.0]
        monkeypatch.setattr(metrics, "monotonic", lambda: clock[0])
        recorder = _http.HttpRecorder(registry=registry)
        recorder.observe("GET", "/a", "200", 0.001, "a" * 32)
        recorder.observe("GET", "/a", "200", 0.002, "b" * 32)
        assert self._exemplars(registry) == {"0.005": "a" * 32}

        clock[0] += metrics.EXEMPLAR_REFRESH_SECONDS
        recorder.observe("GET", "/a", "200", 0.003, "c" * 32)
        assert self._exemplars(registry) == {"0.005": "c" * 32}

    def test_each_bucket_gets_its_own_exemplar_at_once(self, registry, monkeypatch):
        """A slow request is not hidden by a fast one's fresh exemplar, +Inf included."""
        from kaleem_telemetry import _http, metrics

        monkeypatch.setattr(metrics, "monotonic", lambda: 5.0)
        recorder = _http.HttpRecorder(registry=registry)
        recorder.observe("GET", "/a", "200", 0.001, "a" * 32)
        recorder.observe("GET", "/a", "200", 0.3, "b" * 32)
        recorder.observe("GET", "/a", "200", 0.005, "c" * 32)
        recorder.observe("GET", "/a", "200", 60.0, "d" * 32)
        assert self._exemplars(registry) == {
            "0.005": "a" * 32,
            "0.5": "b" * 32,
            "+Inf": "d" * 32,
        }
        samples = {
            sample.labels["le"]: sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "http_request_duration_seconds_bucket"
        }
        assert samples["0.005"] == 2
        assert samples["+Inf"] == 4
