"""The trace file's span records keep what operations need to follow a batch: links."""

from ballast_common.telemetry import span_as_dict
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link


def test_a_batch_span_record_names_the_spans_it_links_to():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("producer a") as a:
        pass
    with tracer.start_as_current_span("producer b") as b:
        pass
    links = [Link(a.get_span_context()), Link(b.get_span_context(), {"why": "second"})]
    with tracer.start_as_current_span("fills-received process", links=links):
        pass
    record = span_as_dict(exporter.get_finished_spans()[-1])
    assert record["name"] == "fills-received process"
    assert record["links"] == [
        {
            "trace_id": format(a.get_span_context().trace_id, "032x"),
            "span_id": format(a.get_span_context().span_id, "016x"),
            "attributes": {},
        },
        {
            "trace_id": format(b.get_span_context().trace_id, "032x"),
            "span_id": format(b.get_span_context().span_id, "016x"),
            "attributes": {"why": "second"},
        },
    ]
    assert span_as_dict(exporter.get_finished_spans()[0])["links"] == []
