"""The outbox relay polls less and less often while idle, yet a local commit that wrote
events still has them published at once (real PostgreSQL, the probe service's schema)."""

import asyncio
import time
import uuid

import pytest
from ballast_common.contracts.events import AccountChangedV1
from ballast_common.relay import OutboxRelay
from ballast_common.testing import InMemoryPublisher, migrated_database
from ballast_common.uow import UnitOfWork
from probe_svc import make_spec

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(database_url):
    database = await migrated_database(make_spec(f"probe_{uuid.uuid4().hex[:6]}"), database_url)
    yield database
    await database.dispose()


class CountingRelay(OutboxRelay):
    """Notes when each pass over the outbox started."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[float] = []

    async def publish_once(self) -> int:
        self.passes.append(time.monotonic())
        return await super().publish_once()


def account_changed(name: str) -> AccountChangedV1:
    return AccountChangedV1(
        account_id="ACC-1",
        household_id="HH-1",
        name=name,
        account_type="taxable",
        model_id="core",
        status="active",
        auto_approve=True,
    )


async def _until(check, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


def test_pause_doubles_while_idle_and_stays_short_while_busy() -> None:
    relay = OutboxRelay(None, InMemoryPublisher(), poll_interval_s=0.2, batch_size=10)
    pauses, pause = [], 0.0
    for _ in range(6):
        pause = relay.next_pause(0, pause)
        pauses.append(pause)
    assert pauses == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert relay.next_pause(10, 2.0) == 0.0  # a full batch: more is waiting
    assert relay.next_pause(3, 2.0) == 0.2
    relay._lock_busy = True  # another replica's relay is publishing: try again soon
    assert relay.next_pause(0, 2.0) == 0.2


async def test_an_idle_relay_backs_off_and_a_commit_wakes_it(db) -> None:
    publisher = InMemoryPublisher()
    relay = CountingRelay(db, publisher, poll_interval_s=0.05, idle_poll_max_s=30.0)
    task = asyncio.create_task(relay.run())
    try:
        # eight idle passes: pauses of 0.05, 0.1, ... 3.2 s between them (a fixed 0.05 s
        # interval would take 0.35 s); the next pause is 6.4 s, so an event out within the
        # bound below was woken, not polled (the bound is wide for a loaded machine)
        await _until(lambda: len(relay.passes) >= 8, timeout_s=20.0)
        assert relay.passes[7] - relay.passes[0] >= 0.05 * (2**7 - 1)
        committed = time.monotonic()
        async with UnitOfWork(db.sessions(), "probe-svc", on_commit=relay.wake) as uow:
            uow.publish(account_changed("woken"), key="ACC-1")
        await _until(lambda: len(publisher.messages) == 1, timeout_s=5.0)
        assert time.monotonic() - committed < 4.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
