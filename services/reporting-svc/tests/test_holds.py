"""trading-hold-changed into the account list and overview: holds, releases, events out of
order and replays, against real Postgres through the handlers and the REST API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import httpx
import pytest
from ballast_common.contracts import events as ev
from ballast_common.contracts.envelope import Envelope
from ballast_common.db import Database
from ballast_common.testing import envelope
from reporting_events import at, deliver, deliver_batch, new_account, new_model, setup_book

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 20)
REASON = "quantity break of lot L1 (ZZA): here 100, at the custodian 90"


def hold(account: str, time: datetime, reason: str = REASON) -> Envelope:
    payload = ev.TradingHoldChangedV1(
        account_id=account, held=True, reason=reason, custodian="ballast", business_date=DAY
    )
    return envelope(payload, time=time)


def release(account: str, time: datetime) -> Envelope:
    payload = ev.TradingHoldChangedV1(
        account_id=account, held=False, custodian="ballast", business_date=DAY
    )
    return envelope(payload, time=time)


async def overview(client: httpx.AsyncClient, account: str) -> dict[str, Any]:
    response = await client.get(f"/accounts/{account}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def listed(client: httpx.AsyncClient, account: str) -> dict[str, Any]:
    response = await client.get("/accounts", params={"search": account})
    assert response.status_code == 200, response.text
    (item,) = response.json()["items"]
    return dict(item)


async def known_account(db: Database) -> str:
    account = new_account()
    await setup_book(db, account, new_model())
    return account


async def test_a_hold_shows_in_the_list_and_the_overview_and_a_release_lifts_it(
    db: Database, client: httpx.AsyncClient
) -> None:
    account = await known_account(db)
    before = await overview(client, account)
    assert before["held"] is False and before["held_reason"] is None

    await deliver(db, hold(account, at(100)))
    held = await overview(client, account)
    assert held["held"] is True
    assert held["held_reason"] == REASON
    assert held["held_by_custodian"] == "ballast"
    assert datetime.fromisoformat(held["held_since"]) == at(100)
    row = await listed(client, account)
    assert (row["held"], row["held_reason"]) == (True, REASON)

    await deliver(db, release(account, at(200)))
    released = await overview(client, account)
    assert (released["held"], released["held_reason"], released["held_since"]) == (
        False,
        None,
        None,
    )
    assert (await listed(client, account))["held"] is False


async def test_a_release_older_than_the_hold_does_not_lift_it(
    db: Database, client: httpx.AsyncClient
) -> None:
    account = await known_account(db)
    await deliver(db, hold(account, at(200)))
    await deliver(db, release(account, at(100)))  # written before the hold, arriving after
    assert (await overview(client, account))["held"] is True

    other = await known_account(db)
    await deliver(db, release(other, at(300)))  # the newer release first: the hold is stale
    await deliver(db, hold(other, at(200)))
    assert (await overview(client, other))["held"] is False


async def test_a_continued_hold_keeps_its_start_and_takes_the_newest_reason(
    db: Database, client: httpx.AsyncClient
) -> None:
    account = await known_account(db)
    await deliver(db, hold(account, at(100), "missing lot L1"))
    await deliver(db, hold(account, at(200), "extra lot L9"))
    held = await overview(client, account)
    assert held["held_reason"] == "extra lot L9"
    assert datetime.fromisoformat(held["held_since"]) == at(100)

    await deliver(db, release(account, at(300)), hold(account, at(400), "basis break of L2"))
    again = await overview(client, account)
    assert again["held_reason"] == "basis break of L2"
    assert datetime.fromisoformat(again["held_since"]) == at(400)


async def test_one_batch_with_several_events_of_an_account_keeps_the_newest(
    db: Database, client: httpx.AsyncClient
) -> None:
    """Out of order within one consumer batch too; the hold's start is where its run of
    holds began."""
    held_account, released_account = await known_account(db), await known_account(db)
    await deliver_batch(
        db,
        [
            hold(held_account, at(300), "extra lot L9"),
            release(released_account, at(250)),
            hold(held_account, at(200), "missing lot L1"),
            release(held_account, at(100)),
            hold(released_account, at(150)),
        ],
    )
    held = await overview(client, held_account)
    assert (held["held"], held["held_reason"]) == (True, "extra lot L9")
    assert datetime.fromisoformat(held["held_since"]) == at(200)
    assert (await overview(client, released_account))["held"] is False


async def test_a_replay_changes_nothing(db: Database, client: httpx.AsyncClient) -> None:
    account = await known_account(db)
    events = [hold(account, at(100)), release(account, at(200)), hold(account, at(300))]
    for event in events:
        await deliver(db, event)
    once = await overview(client, account)
    for event in events:
        await deliver(db, event)
    assert await overview(client, account) == once
    assert once["held"] is True and datetime.fromisoformat(once["held_since"]) == at(300)


async def test_a_hold_before_account_changed_shows_once_the_account_is_known(
    db: Database, client: httpx.AsyncClient
) -> None:
    account = new_account()
    await deliver(db, hold(account, at(1)))
    assert (await client.get(f"/accounts/{account}")).status_code == 404
    await setup_book(db, account, new_model())
    assert (await overview(client, account))["held_reason"] == REASON


async def test_another_tenants_hold_is_not_shown(db: Database, client: httpx.AsyncClient) -> None:
    account = await known_account(db)
    payload = ev.TradingHoldChangedV1(account_id=account, held=True, reason=REASON)
    await deliver(db, envelope(payload, tenant="other-firm", time=at(100)))
    assert (await overview(client, account))["held"] is False
