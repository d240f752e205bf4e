"""Traces (OpenTelemetry): one event followed from the webhook door through Kafka, the consumer and
its database transaction, the outbox and the relay to the downstream topics.

Set up only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set
and `OTEL_SDK_DISABLED` is not `true`: then each process (`setup`) installs a TracerProvider that
exports by OTLP over HTTP (the exporter's own `OTEL_EXPORTER_OTLP_*` settings apply; sampling
follows `OTEL_TRACES_SAMPLER`, by default the caller's decision, else every trace). Otherwise
nothing is installed, the SDK is not even imported, and every call site costs one check of
`active()`: no span, no context, no attribute is built.

Where the trace context travels (W3C `traceparent`):
- the door continues the caller's `traceparent` (a server span), and the records it publishes
  carry the context of its Kafka send span (service/webhooks/routes.py);
- the consumer's span for a batch is a child of the records' context when they all belong to one
  trace, and a new trace linked to each of them otherwise; the database transaction is its child
  (consumers/runner.py);
- an outbox row stores the context of the transaction that wrote it (service/outbox/store.py);
- the relay's send span continues it, and the downstream message carries the send's context in
  `traceparent` and `ce_traceparent` (service/outbox/relay.py).
Without tracing the door still writes a `traceparent` on its records (the caller's, or a new one).

Only spans are built here: attributes are computed only when a span is recording (a caller's
unsampled trace is followed, not recorded).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
INSTRUMENTATION = "roster-sync"
MAX_LINKS = 128  # the SDK's default span limit: more would be dropped anyway

Attributes = Mapping[str, str | int | float | bool]

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_PROPAGATOR = TraceContextTextMapPropagator()
_NOTHING: AbstractContextManager[None] = nullcontext()


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def setup(process: str) -> bool:
    """Installs the OTLP-exporting TracerProvider for this process (`api`, `consume`, `relay`,
    ...) if the environment asks for it (see `wanted`); True if it did. The service name is
    `OTEL_SERVICE_NAME`, else `roster-<process>`. Call once, in the process that will trace
    (after any fork: the exporter runs a thread)."""
    if _tracer is not None or not wanted():
        return _tracer is not None
    # Imported here: a process without tracing never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"roster-{process}"}
    provider = TracerProvider(resource=Resource.create(attributes))  # flushed at exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)  # for libraries that trace (FastAPI's routes)
    install(provider)
    return True


def install(provider: TracerProvider) -> None:
    """Traces through `provider` from now on (`setup`; tests install one with an in-memory
    exporter: the global provider can be set only once per process)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION)


def uninstall() -> None:
    """Back to no tracing (tests)."""
    global _tracer, _provider
    _tracer = _provider = None


def active() -> bool:
    return _tracer is not None


def provider() -> TracerProvider | None:
    return _provider


def tracer() -> Tracer:
    """The tracer; call only when `active()`."""
    assert _tracer is not None
    return _tracer


def remote(traceparent: str | None) -> Context:
    """The context a W3C `traceparent` continues; an empty one (a new trace) if it is absent or
    not valid."""
    if not traceparent:
        return Context()
    return _PROPAGATOR.extract({"traceparent": traceparent}, context=Context())


def span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


def traceparent_of(context: SpanContext) -> str | None:
    """The W3C `traceparent` of a span context; None if it is not valid."""
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def traceparent(span: Span) -> str:
    """The W3C `traceparent` of a span started here (always valid, recording or not)."""
    found = traceparent_of(span.get_span_context())
    assert found is not None
    return found


def current_traceparent() -> str | None:
    """The `traceparent` of the current span; None without tracing or outside any span."""
    if _tracer is None:
        return None
    return traceparent_of(trace.get_current_span().get_span_context())


def start(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: Context | None = None,
    links: Sequence[Link] = (),
    attributes: Callable[[], Attributes] | None = None,
) -> Span:
    """A span started now (call only when `active()`; the caller ends it). Its parent is the
    span of `context`, or the current span; `attributes` is called only if it records."""
    span = tracer().start_span(name, context=context, kind=kind, links=links or None)
    if attributes is not None and span.is_recording():
        span.set_attributes(attributes())
    return span


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: Context | None = None,
    links: Sequence[Link] = (),
    attributes: Callable[[], Attributes] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span that is current inside the `with` block and ends with it (an exception is recorded
    on it); without tracing, a context manager that does nothing and yields None."""
    if _tracer is None:
        return _NOTHING
    return _current(start(name, kind=kind, context=context, links=links, attributes=attributes))


@contextmanager
def _current(started: Span) -> Iterator[Span]:
    with trace.use_span(started, end_on_exit=True):
        yield started


def set_attributes(span: Span | None, attributes: Callable[[], Attributes]) -> None:
    """Adds attributes to a span that records (none built otherwise)."""
    if span is not None and span.is_recording():
        span.set_attributes(attributes())


def fail(span: Span | None, description: str) -> None:
    """Marks a span as failed (an outcome, not an exception: a 503, a refused record)."""
    if span is not None and span.is_recording():
        span.set_status(trace.Status(trace.StatusCode.ERROR, description))


def batch_parent(traceparents: Sequence[str | None]) -> tuple[Context, list[Link]]:
    """The parent and links of a span that processes a batch of messages (their `traceparent`
    headers): the messages' context when they all belong to one trace, so a batch of one event
    (or of one webhook body's events) continues its trace; otherwise a new trace, linked to each
    of them (OpenTelemetry's batch processing convention). At most `MAX_LINKS` links."""
    seen: dict[str, SpanContext] = {}
    for value in traceparents:
        if value and value not in seen:
            found = span_context(remote(value))
            if found.is_valid:
                seen[value] = found
    contexts = list(seen.values())
    if contexts and len({c.trace_id for c in contexts}) == 1:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0]))
        return parent, [Link(c) for c in contexts[1 : MAX_LINKS + 1]]
    return Context(), [Link(c) for c in contexts[:MAX_LINKS]]
