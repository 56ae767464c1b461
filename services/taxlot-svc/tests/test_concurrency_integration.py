"""Bulk opening balances racing account-changed, against the real PostgreSQL.

The reverted tax-engine version of this service (52a922e) failed exactly here under the
1,000-account demo: ``POST /holdings:batch`` answered 500 (a deadlock between the bulk
opening and the account-changed consumer, both taking household locks), and accounts ended
with cash but no lots (an opening read the account's household before the consumer moved
it, then replayed a household the account had left). Here 1,200 accounts are opened in
batches over REST while the consumer applies account-changed for the same accounts,
concurrently, in shuffled batches: every request must succeed, every event be processed,
and every account end with exactly its opening lots, in its new household.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from ballast_common.consumer import BatchProcessor, Subscription
from ballast_common.contracts.events import AccountChangedV1
from ballast_common.db import Database
from ballast_common.outbox import pending_messages
from ballast_common.testing import consumer_record, envelope, unit_of_work
from taxlot_svc import repository as repo
from taxlot_svc import snapshots
from taxlot_svc.handlers import on_account_changed
from taxlot_svc.replays import facts_of

pytestmark = pytest.mark.integration

D = Decimal
ACCOUNTS = 1200
SYMBOLS = ["VTI", "VXUS", "BND", "AAPL", "MSFT"]


def account_changed(account: str, household: str, offset: int) -> ConsumerRecord[bytes, bytes]:
    payload = AccountChangedV1(
        account_id=account,
        household_id=household,
        name=account,
        account_type="ira" if offset % 7 == 0 else "taxable",
        model_id=None,
        status="active",
        auto_approve=True,
    )
    return consumer_record(envelope(payload, tenant="acme"), offset)


def holdings(account: str, n: int) -> dict[str, Any]:
    """Three or four positions, one with two lots."""
    positions: list[dict[str, Any]] = [
        {
            "symbol": SYMBOLS[(n + k) % len(SYMBOLS)],
            "quantity": str(10 + k),
            "cost_basis": f"{100 * (k + 1)}.00",
            "acquired_on": "2024-06-03",
        }
        for k in range(2 + n % 2)
    ]
    positions.append(
        {
            "symbol": "SPLIT",
            "lots": [
                {"quantity": "5", "cost_basis": "50.00", "acquired_on": "2023-01-10"},
                {"quantity": "2.5", "cost_basis": "40.25", "acquired_on": "2025-02-11"},
            ],
        }
    )
    return {
        "account_id": account,
        "as_of": "2026-01-15",
        "cash": "1000.00",
        "positions": positions,
    }


async def test_bulk_opening_races_account_changed(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    run = uuid.uuid4().hex[:8]
    accounts = [f"C{run}-{n:04d}" for n in range(ACCOUNTS)]
    household = {a: f"H{run}-{n // 3}" for n, a in enumerate(accounts)}  # three per household
    bodies = {a: holdings(a, n) for n, a in enumerate(accounts)}
    processor = BatchProcessor(
        f"taxlot-race-{run}",
        [Subscription.batch("account-changed", on_account_changed)],
        lambda: unit_of_work(taxlot_db, "taxlot-svc"),
    )
    records = [account_changed(a, household[a], n) for n, a in enumerate(accounts)]
    random.Random(run).shuffle(records)

    timeline: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()

    async def open_all() -> list[int]:
        statuses = []
        for start in range(0, ACCOUNTS, 300):
            part = [bodies[a] for a in accounts[start : start + 300]]
            response = await client.post("/holdings:batch", json={"accounts": part})
            assert response.status_code == 201, response.text
            statuses.append(response.status_code)
            timeline.append((loop.time(), "open"))
        return statuses

    async def consume_all() -> Counter[str]:
        outcomes: Counter[str] = Counter()
        for start in range(0, len(records), 100):
            outcomes.update(await processor.process(records[start : start + 100]))
            timeline.append((loop.time(), "consume"))
            await asyncio.sleep(0)
        return outcomes

    statuses, outcomes = await asyncio.gather(open_all(), consume_all())
    assert statuses == [201] * 4
    assert outcomes == {"processed": ACCOUNTS, "duplicate": 0, "dead_lettered": 0}
    # They did run interleaved: consumer batches finished between opening requests.
    order = [kind for _, kind in sorted(timeline)]
    first_open, last_open = order.index("open"), len(order) - 1 - order[::-1].index("open")
    assert "consume" in order[first_open:last_open], order

    async with taxlot_db.sessions() as s:
        lots = await repo.lots_of_accounts(s, accounts)
        facts = await facts_of(s, accounts)
        books = await repo.books(s, accounts, for_update=False)
    assert len(books) == ACCOUNTS
    by_account: dict[str, list[Any]] = {a: [] for a in accounts}
    for lot in lots:
        by_account[lot.account_id].append(lot)
    for account in accounts:
        expected = sorted(
            (p["symbol"], D(lot["quantity"]), D(lot["cost_basis"]))
            for p in bodies[account]["positions"]
            for lot in (p.get("lots") or [p])
        )
        got = sorted((x.symbol, x.quantity, x.cost_basis) for x in by_account[account])
        assert got == expected, account
        assert facts[account].household == household[account]

    # Every account's opening-balance event carries its lots.
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        await snapshots.publish_pending(uow, limit=100_000)
    async with taxlot_db.sessions() as s:
        pending = await pending_messages(s, 1_000_000)
    opened = {
        m.key: json.loads(m.value)["payload"]
        for m in pending
        if m.topic == "holdings-reconciled"
        and m.key in bodies
        and json.loads(m.value)["payload"]["cause"] == "opening-balance"
    }
    assert len(opened) == ACCOUNTS
    for account, payload in opened.items():
        count = sum(len(p["lots"]) for p in payload["positions"])
        assert count == len(by_account[account])
