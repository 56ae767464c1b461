"""The contract registry's producers and consumers are the services' own declarations: every
service declares what it consumes in `handlers.subscriptions(settings)`, its `main.spec` runs
exactly that, and each topic's consumers in `registry.TOPICS` are the services subscribed."""

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from ballast_common.app import ServiceSpec
from ballast_common.consumer import Subscription
from ballast_common.contracts.registry import CONTRACTS, TOPICS

ROOT = Path(__file__).resolve().parents[2]
DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class Service:
    folder: str
    spec: ServiceSpec
    declared: list[Subscription]  # what handlers.subscriptions(Settings()) returns

    @property
    def topics(self) -> set[str]:
        return {s.event_type for s in self.spec.subscriptions}


def _load(folder: Path) -> Service:
    package = folder.name.replace("-", "_")
    main = importlib.import_module(f"{package}.main")
    handlers = importlib.import_module(f"{package}.handlers")
    settings = importlib.import_module(f"{package}.settings")
    return Service(folder.name, main.spec, handlers.subscriptions(settings.Settings()))


SERVICES = [_load(f) for f in sorted((ROOT / "services").iterdir()) if (f / "src").is_dir()]
NAMES = {s.spec.name for s in SERVICES}


def _shape(subscription: Subscription) -> tuple[object, ...]:
    return (
        subscription.event_type,
        "batch" if subscription.batch_handler is not None else "one at a time",
        subscription.lane,
        subscription.batch_size,
        subscription.attempts,
        subscription.on_dead_letter is not None,
    )


def test_all_six_services_are_found():
    assert len(SERVICES) == 6, [s.folder for s in SERVICES]


@pytest.mark.parametrize("service", SERVICES, ids=[s.folder for s in SERVICES])
def test_a_service_runs_what_its_handlers_declare(service):
    assert service.spec.name == service.folder, "the consumer group is named after the folder"
    running = [_shape(s) for s in service.spec.subscriptions]
    assert running == [_shape(s) for s in service.declared], (
        f"{service.folder}: main.spec.subscriptions must be handlers.subscriptions(settings)"
    )
    assert len(service.topics) == len(running), f"{service.folder} subscribes to a topic twice"


@pytest.mark.parametrize("service", SERVICES, ids=[s.folder for s in SERVICES])
def test_every_subscribed_topic_has_a_contract(service):
    unknown = service.topics - {c.type for c in CONTRACTS.values()} - {DEAD_LETTER}
    assert not unknown, f"{service.folder} consumes {sorted(unknown)}: no contract in registry.py"
    assert DEAD_LETTER not in service.topics


@pytest.mark.parametrize("topic", sorted(set(TOPICS) - {DEAD_LETTER}))
def test_registry_consumers_are_the_services_that_subscribe(topic):
    subscribed = sorted(s.spec.name for s in SERVICES if topic in s.topics)
    listed = sorted(TOPICS[topic].consumers)
    missing, extra = sorted(set(subscribed) - set(listed)), sorted(set(listed) - set(subscribed))
    assert listed == subscribed, (
        f"registry.TOPICS[{topic!r}].consumers: add {missing}, remove {extra} "
        "(what the services' handlers.subscriptions() say), then run `make contracts`"
    )


@pytest.mark.parametrize("topic", sorted(set(TOPICS) - {DEAD_LETTER}))
def test_every_producer_is_a_service(topic):
    assert TOPICS[topic].producer in NAMES


def test_every_consuming_service_has_a_dead_letter_topic_in_the_asyncapi_document():
    document = json.loads((ROOT / "contracts" / "asyncapi.json").read_text())
    services = document["channels"][DEAD_LETTER]["parameters"]["service"]["enum"]
    assert services == sorted(s.spec.name for s in SERVICES if s.spec.subscriptions)
