"""Prometheus metrics every service exposes on /metrics."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "ballast_http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "ballast_http_request_seconds", "HTTP request latency", ["method", "route"]
)
EVENTS_CONSUMED = Counter(
    "ballast_events_consumed_total", "Events handled by consumers", ["topic", "outcome"]
)
EVENTS_PUBLISHED = Counter("ballast_events_published_total", "Events relayed to Kafka", ["topic"])
OUTBOX_BACKLOG = Gauge("ballast_outbox_backlog", "Outbox rows not yet published")
CONSUMER_RETRIES = Counter(
    "ballast_consumer_retries_total", "Batches retried after a transient error", ["group"]
)
