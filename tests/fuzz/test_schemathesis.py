"""Schemathesis against each of the six services, in-process (ASGI) on the real PostgreSQL
and Kafka of the test stack: every operation, with valid and invalid inputs (its examples, the
coverage phase's boundary values, then generated positive and negative cases, NUL bytes
included). No answer may be a 5xx, and every answer must match the OpenAPI document's schema
for its status.

Bounded and deterministic: `EXAMPLES` generated cases per operation and mode on top of the
coverage phase's, derandomized with a fixed seed, so `make test` runs the same cases every
time (80 s for the six services on two shared cores).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import schemathesis
from ballast_common.app import Runtime, ServiceSpec, create_app
from ballast_common.migrations.runner import SERVICE_PACKAGES
from ballast_common.settings import ServiceSettings
from ballast_common.testing import bearer, with_test_issuer
from fastapi import FastAPI
from schemathesis import GenerationMode
from schemathesis.engine import Status, events
from schemathesis.python import asgi

pytestmark = pytest.mark.integration

SERVICES = SERVICE_PACKAGES
# BALLAST_FUZZ_EXAMPLES=50 searches deeper (locally; CI keeps the default).
EXAMPLES = int(os.environ.get("BALLAST_FUZZ_EXAMPLES", "5"))
SEED = 20261122
CHECKS = ["not_a_server_error", "response_schema_conformance"]


def fuzzing_lifespan(spec: ServiceSpec, service_settings: ServiceSettings) -> Any:
    """The service's database (migrated) and Kafka publisher: what its requests use. No
    consumers, relay or background loops: the HTTP surface is under test."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(spec, service_settings)
        app.state.runtime = runtime
        await runtime.migrate()
        await runtime.publisher.start()
        try:
            yield
        finally:
            await runtime.publisher.stop()
            await runtime.db.dispose()

    return lifespan


@pytest.fixture(params=SERVICES)
def service_schema(
    request: pytest.FixtureRequest, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> Iterator[Any]:
    """The service's OpenAPI schema, loaded from the app (which starts it in-process)."""
    spec: ServiceSpec = importlib.import_module(f"{request.param}.main").spec
    service_settings = spec.settings_type(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"{topic_prefix}fuzz.",
        migrate_on_start=False,
    )
    service_settings = with_test_issuer(service_settings)
    app = create_app(spec, service_settings)
    app.router.lifespan_context = fuzzing_lifespan(spec, service_settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.seed = SEED
    schema.config.cache.enabled = False  # no state carried between runs (.schemathesis/)
    # as an admin of the test tenant: every operation is allowed, so each is fuzzed in full
    schema.config.update(workers=1, continue_on_failure=True, headers=bearer())
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    schema.config.checks.update(included_check_names=CHECKS)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=EXAMPLES,
        deterministic=True,
        allow_x00=True,
    )
    yield schema
    asgi.shutdown_lifespans()


def test_no_5xx_and_every_answer_as_documented(service_schema: Any) -> None:
    failures: list[str] = []
    errors: list[str] = []
    scenarios = 0
    for event in schemathesis.engine.from_schema(service_schema).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            if event.status == Status.FAILURE:
                failures.extend(_failures(event))
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            errors.append(f"schemathesis failed: {event.exception!r}")
    assert scenarios > 0, "no operation was tested"
    assert not errors, "\n".join(errors)
    assert not failures, f"{len(failures)} failing case(s):\n\n" + "\n\n".join(failures[:20])


def _failures(event: events.ScenarioFinished) -> Iterator[str]:
    recorder = event.recorder
    for checks in recorder.checks.values():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                yield (
                    f"[{recorder.label}] {check.name}: {failure.title}\n{failure.message}\n"
                    f"{check.failure_info.code_sample}"
                )
