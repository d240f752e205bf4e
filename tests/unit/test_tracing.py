"""Tracing is set up only when asked for, costs nothing otherwise, and its context rules (a batch's
parent, the relay's headers) hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas import kafka_headers as h
from service import tracing
from service.outbox.relay import kafka_message
from service.outbox.store import Pending
from service.paths import project_root

ONE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SAME_TRACE = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
OTHER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# Starts every process's code path that sets tracing up, then reports what got loaded.
_PROBE = """
import json, sys
from opentelemetry import trace
import consumers.main, service.app, service.outbox.main, service.worker
from service import tracing
installed = tracing.setup("consume")
provider = trace.get_tracer_provider()
report = {
    "installed": installed,
    "active": tracing.active(),
    "sdk_loaded": any(m.startswith("opentelemetry.sdk") for m in sys.modules),
    "exporter_loaded": any(m.startswith("opentelemetry.exporter") for m in sys.modules),
    "provider": type(provider).__name__,
}
if installed:
    report["service"] = provider.resource.attributes["service.name"]
    report["processors"] = [
        type(p).__name__ for p in provider._active_span_processor._span_processors
    ]
    provider.shutdown()
print(json.dumps(report))
"""


def _probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | env
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=project_root(),
        env=clean,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_without_an_endpoint_nothing_is_installed_or_even_loaded() -> None:
    assert _probe() == {
        "installed": False,
        "active": False,
        "sdk_loaded": False,
        "exporter_loaded": False,
        "provider": "ProxyTracerProvider",
    }
    # Disabled explicitly, an endpoint changes nothing.
    disabled = _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SDK_DISABLED="true")
    assert disabled["installed"] is False and disabled["sdk_loaded"] is False


def test_an_endpoint_installs_an_otlp_exporting_provider() -> None:
    report = _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert report["installed"] is True and report["active"] is True
    assert report["provider"] == "TracerProvider"
    assert report["service"] == "roster-consume"
    assert report["processors"] == ["BatchSpanProcessor"] and report["exporter_loaded"] is True
    named = _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SERVICE_NAME="x")
    assert named["service"] == "x"


def test_wanted_reads_the_environment() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": " "})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}
    )


def test_without_tracing_the_helpers_do_nothing() -> None:
    assert not tracing.active()
    assert tracing.current_traceparent() is None
    with tracing.span("nothing") as span:
        assert span is None


def _ids(traceparent: str) -> tuple[int, int]:
    _, trace_id, span_id, _ = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16)


def test_a_batch_of_one_trace_continues_it() -> None:
    parent, links = tracing.batch_parent([ONE, None, ONE, "garbage", SAME_TRACE])
    found = tracing.span_context(parent)
    assert (found.trace_id, found.span_id) == _ids(ONE)
    assert [(link.context.trace_id, link.context.span_id) for link in links] == [_ids(SAME_TRACE)]


def test_a_batch_of_several_traces_starts_one_linked_to_each() -> None:
    parent, links = tracing.batch_parent([ONE, OTHER, None])
    assert not tracing.span_context(parent).is_valid  # a new trace
    assert {(link.context.trace_id, link.context.span_id) for link in links} == {
        _ids(ONE),
        _ids(OTHER),
    }
    empty, none = tracing.batch_parent([None, "00-zz"])
    assert not tracing.span_context(empty).is_valid and none == []


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()


def test_attributes_are_built_only_for_a_recording_span(exported: InMemorySpanExporter) -> None:
    built: list[str] = []

    def attributes() -> tracing.Attributes:
        built.append("yes")
        return {"a": 1}

    unsampled = tracing.remote(ONE[:-2] + "00")
    with tracing.span("quiet", context=unsampled, attributes=attributes) as span:
        assert span is not None and not span.is_recording()
        assert tracing.current_traceparent() == tracing.traceparent(span)
        assert tracing.traceparent(span).endswith("-00")
    assert built == [] and exported.get_finished_spans() == ()
    with tracing.span("loud", context=tracing.remote(ONE), attributes=attributes):
        pass
    assert built == ["yes"]
    (finished,) = exported.get_finished_spans()
    assert finished.attributes == {"a": 1}
    assert finished.parent is not None and finished.parent.span_id == _ids(ONE)[1]


def _row() -> Pending:
    return Pending(
        7, "roster.changes.v1", "k1", "roster.student.upserted", "d1", 3, b"{}", datetime.now(UTC)
    )


def test_the_relay_writes_the_trace_context_in_both_headers() -> None:
    _, _, plain = kafka_message(_row())
    names = [name for name, _ in plain]
    assert h.TRACEPARENT not in names and "ce_traceparent" not in names
    _, _, traced = kafka_message(_row(), ONE)
    headers = dict(traced)
    assert headers[h.TRACEPARENT] == headers["ce_traceparent"] == ONE.encode()
