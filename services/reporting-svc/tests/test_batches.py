"""reporting-svc at book scale, on real Postgres: whole consumer batches through the real
handlers, stored valuations kept current by events, the engine's drift verdicts, runs
assembled from their chunks, and the account-lock that keeps derived counts exact when two
transactions race."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.consumer import Delivery
from ballast_common.contracts import events as ev
from ballast_common.contracts.envelope import Envelope
from ballast_common.db import Database
from ballast_common.testing import (
    consumer_record,
    envelope,
    example,
    service_consumer,
    unit_of_work,
)
from reporting_events import (
    approved,
    at,
    chunk_done,
    deliver,
    deliver_batch,
    drift,
    fill,
    holdings,
    new_account,
    new_model,
    proposed,
    setup_book,
    trade,
)
from reporting_svc import service
from reporting_svc.handlers import SUBSCRIPTIONS
from reporting_svc.tables import AccountValuation
from sample_book import load_sample
from sqlalchemy import text
from sqlmodel import select

pytestmark = pytest.mark.integration

CENTS = Decimal("0.01")


def prices(time_s: int, **symbol_prices: str) -> Envelope:
    payload = ev.SecuritiesChangedV1(
        securities=[
            ev.SecurityV1(
                symbol=s, name=f"{s} Corp", asset_class="US Equity", sector="Tech",
                price=Decimal(p),
            )
            for s, p in symbol_prices.items()
        ]
    )  # fmt: skip
    return envelope(payload, key="security-master", time=at(time_s))


def snapshot_v2(
    account: str, time_s: int, cash: str, positions: dict[str, list[tuple[str, str]]],
    as_of: date = date(2026, 11, 20),
) -> Envelope:  # fmt: skip
    """holdings-reconciled v2: per symbol its lots (quantity, cost)."""
    payload = ev.HoldingsReconciledV2.model_validate(
        {
            "account_id": account,
            "as_of": as_of.isoformat(),
            "cash": cash,
            "positions": [
                {
                    "symbol": symbol,
                    "quantity": str(sum(Decimal(q) for q, _ in lots)),
                    "cost_basis": str(sum(Decimal(c) for _, c in lots)),
                    "lots": [
                        {"lot_id": f"{account}-{symbol}-{i}", "quantity": q,
                         "acquired": "2025-01-02", "cost_basis": c}
                        for i, (q, c) in enumerate(lots)
                    ],
                }
                for symbol, lots in positions.items()
            ],
            "cause": "opening-balance",
        }
    )  # fmt: skip
    return envelope(payload, key=account, time=at(time_s))


async def valuations(db: Database, accounts: list[str]) -> dict[str, AccountValuation]:
    async with db.sessions() as session:
        rows = await session.exec(
            select(AccountValuation).where(AccountValuation.account_id.in_(accounts))  # type: ignore[attr-defined]
        )
        return {r.account_id: r for r in rows}


async def account_changed_batch(db: Database, accounts: list[str], model: str) -> None:
    await deliver_batch(
        db,
        [
            envelope(example("account-changed", account_id=a, model_id=model), key=a, time=at(2))
            for a in accounts
        ],
    )


# --- valuations -----------------------------------------------------------------------------


async def test_a_batch_of_holdings_for_many_accounts_stores_each_ones_value(
    db: Database, client: httpx.AsyncClient
) -> None:
    rng = random.Random(5)
    model = new_model()
    await deliver(db, prices(0, ZZA="10", ZZB="20.5", ZZC="3.25"))
    accounts = [new_account() for _ in range(60)]
    await account_changed_batch(db, accounts, model)
    before = (await client.get("/summary")).json()
    expected: dict[str, Decimal] = {}
    batch = []
    for i, account in enumerate(accounts):
        positions = {
            s: [(str(rng.randint(1, 400)), "100"), (str(rng.randint(1, 50)), "10.5")]
            for s in rng.sample(["ZZA", "ZZB", "ZZC", "ZZQ"], k=rng.randint(0, 4))
        }
        cash = str(Decimal(rng.randint(-500, 90000)) / 4)
        batch.append(snapshot_v2(account, 10 + i, cash, positions))
        price = {"ZZA": Decimal(10), "ZZB": Decimal("20.5"), "ZZC": Decimal("3.25")}
        expected[account] = Decimal(cash) + sum(
            (sum(Decimal(q) for q, _ in lots) * price[s] for s, lots in positions.items()
             if s in price),
            Decimal(0),
        )  # fmt: skip
    # An older snapshot of the first account in the same batch changes nothing, and a newer
    # one of the second (later in the batch, earlier in it: the newest wins either way).
    batch.append(snapshot_v2(accounts[0], 1, "1", {"ZZA": [("1", "1")]}))
    batch.insert(0, snapshot_v2(accounts[1], 500, "7", {"ZZB": [("2", "1")]}))
    expected[accounts[1]] = Decimal("7") + 2 * Decimal("20.5")
    await deliver_batch(db, batch)

    stored = await valuations(db, accounts)
    assert {a: stored[a].market_value for a in accounts} == expected
    for a in accounts:
        assert stored[a].market_value == stored[a].cash + stored[a].securities_value  # type: ignore[operator]
    newest = {a: max((e for e in batch if e.key == a), key=lambda e: e.time) for a in accounts}
    assert newest[accounts[0]].time == at(10) and newest[accounts[1]].time == at(500)
    for a, e in newest.items():
        held = {p["symbol"] for p in e.payload["positions"]}
        assert stored[a].positions == len(held)
        assert stored[a].unpriced_positions == int("ZZQ" in held)
    async with db.sessions() as session:
        lots = (
            await session.execute(
                text(
                    "SELECT SUM(json_array_length(lots)) FROM account_lots"
                    " WHERE account_id = ANY(:ids)"
                ),
                {"ids": accounts},
            )
        ).scalar_one()
    assert lots == sum(len(p["lots"]) for e in newest.values() for p in e.payload["positions"])
    item = (await client.get(f"/accounts/{accounts[1]}")).json()
    assert item["market_value"] == "48.00" and item["positions"] == 1
    after = (await client.get("/summary")).json()
    grown = Decimal(after["total_market_value"]) - Decimal(before["total_market_value"])
    assert grown == sum(expected.values(), Decimal(0))


async def test_new_prices_revalue_only_the_holders(db: Database, client: httpx.AsyncClient) -> None:
    model = new_model()
    await deliver(db, prices(0, ZZA="10", ZZB="20", ZZC="5", ZZD="7"))
    holders, others = [new_account() for _ in range(3)], [new_account() for _ in range(3)]
    await account_changed_batch(db, holders + others, model)
    await deliver_batch(
        db,
        [holdings(a, at(3), "100", {"ZZD": str(10 * (i + 1)), "ZZA": "1"})
         for i, a in enumerate(holders)]
        + [holdings(a, at(3), "100", {"ZZA": "5"}) for a in others],
    )  # fmt: skip
    before = await valuations(db, holders + others)
    total_before = Decimal((await client.get("/summary")).json()["total_market_value"])

    await deliver(db, prices(10, ZZD="7.5"))

    after = await valuations(db, holders + others)
    for i, a in enumerate(holders):
        assert after[a].market_value == before[a].market_value + Decimal("0.5") * 10 * (i + 1)  # type: ignore[operator]
        assert after[a].updated_at > before[a].updated_at
    for a in others:  # not touched at all
        assert after[a].market_value == before[a].market_value
        assert after[a].updated_at == before[a].updated_at
    total_after = Decimal((await client.get("/summary")).json()["total_market_value"])
    assert total_after - total_before == Decimal("0.5") * (10 + 20 + 30)

    # The same price again, or an older price list, revalues nobody.
    await deliver(db, prices(11, ZZD="7.5"))
    await deliver(db, prices(5, ZZD="99"))
    assert {a: v.updated_at for a, v in (await valuations(db, holders)).items()} == {
        a: v.updated_at for a, v in after.items() if a in holders
    }


async def test_accounts_without_holdings_sort_last_in_either_direction(
    db: Database, client: httpx.AsyncClient
) -> None:
    model = new_model()
    await deliver(db, prices(0, ZZA="10"))
    accounts = [new_account() for _ in range(5)]
    await account_changed_batch(db, accounts, model)
    await deliver_batch(
        db, [holdings(a, at(3), str(100 * (i + 1)), {}) for i, a in enumerate(accounts[:3])]
    )
    for order, values in (("asc", ["100", "200", "300"]), ("desc", ["300", "200", "100"])):
        page = (
            await client.get(
                "/accounts", params={"model_id": model, "sort": "market_value", "order": order}
            )
        ).json()
        assert page["total"] == 5
        got = [i["market_value"] for i in page["items"]]
        assert got[:3] == [f"{v}.00" for v in values] and got[3:] == [None, None]
        pages = []
        for offset in range(0, 5, 2):
            part = await client.get(
                "/accounts",
                params={"model_id": model, "sort": "market_value", "order": order,
                        "limit": 2, "offset": offset},
            )  # fmt: skip
            assert part.json()["total"] == 5
            pages += [i["account_id"] for i in part.json()["items"]]
        assert pages == [i["account_id"] for i in page["items"]]


# --- the engine's drift verdicts ------------------------------------------------------------


async def test_the_drift_shown_is_the_engines_latest_verdict(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)  # 50/50 model, held 50% ZZA 50% cash
    before = (await client.get("/summary")).json()
    run1, run2 = uuid.uuid4(), uuid.uuid4()
    # Bands and cash targets are the engine's business: it may call 0.8% drift out of a 0.5%
    # tolerance even where a naive weight difference would say 50%.
    await deliver_batch(
        db,
        [
            envelope(
                example("drift-detected", run_id=str(run2), account_id=account, model_id=model,
                        model_version=1, max_abs_drift="0.008", tolerance="0.005",
                        out_of_tolerance=True),
                key=account, time=at(40),
            ),
            # an older measurement in the same batch does not win
            envelope(
                example("drift-detected", run_id=str(run1), account_id=account, model_id=model,
                        model_version=1, max_abs_drift="0.2", tolerance="0.05",
                        out_of_tolerance=True),
                key=account, time=at(20),
            ),
        ],
    )  # fmt: skip
    item = (await client.get(f"/accounts/{account}")).json()
    assert Decimal(item["max_drift"]) == Decimal("0.008")
    assert Decimal(item["tolerance"]) == Decimal("0.005") and item["out_of_tolerance"] is True
    assert item["last_measured"]["run_id"] == str(run2)
    # delivered late, an older verdict still loses
    await deliver(db, drift(account, model, run1, at(30), out=False, max_abs_drift="0.001"))
    item = (await client.get(f"/accounts/{account}")).json()
    assert item["last_measured"]["run_id"] == str(run2) and item["out_of_tolerance"] is True
    after = (await client.get("/summary")).json()
    assert after["accounts_out_of_tolerance"] == before["accounts_out_of_tolerance"] + 1
    assert after["accounts_measured"] == before["accounts_measured"] + 1
    # both runs keep what they measured
    assert (await client.get(f"/runs/{run1}")).json()["accounts_out_of_tolerance"] == 0
    assert (await client.get(f"/runs/{run2}")).json()["accounts_out_of_tolerance"] == 1
    # a newer verdict within tolerance takes the account out of the count
    run3 = uuid.uuid4()
    await deliver(db, drift(account, model, run3, at(50), out=False, max_abs_drift="0.002"))
    latest = (await client.get("/summary")).json()
    assert latest["accounts_out_of_tolerance"] == before["accounts_out_of_tolerance"]
    listed = (
        await client.get("/accounts", params={"search": account, "out_of_tolerance": "false"})
    ).json()
    assert [i["account_id"] for i in listed["items"]] == [account]


# --- runs from chunks -----------------------------------------------------------------------


async def test_a_run_is_assembled_from_its_chunks_in_any_order(
    db: Database, client: httpx.AsyncClient
) -> None:
    model = new_model()
    accounts = [new_account() for _ in range(3)]
    for a in accounts:
        await setup_book(db, a, model)
    run = uuid.uuid4()
    proposals = {a: uuid.uuid4() for a in accounts}
    buys = {a: trade("ZZB", "buy", "10", "20") for a in accounts}
    # Chunk 2 first (account 2's proposal arrives before it), then a duplicate of it, then
    # chunk 0 failed, then account 0's proposal.
    await deliver(db, proposed(accounts[2], model, run, proposals[accounts[2]],
                               [buys[accounts[2]]], at(30)))  # fmt: skip
    await deliver_batch(
        db,
        [
            chunk_done(run, at(31), chunk=2, chunks=3, model=model),
            chunk_done(run, at(32), chunk=2, chunks=3, model=model),
        ],
    )
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["chunks"] == 3 and progress["chunks_completed"] == 1
    assert progress["expected_trades"] == 1 and progress["complete"] is False
    await deliver(
        db,
        chunk_done(run, at(33), chunk=1, chunks=3, status="failed", proposals=0, trades=0,
                   model=model, error="engine failed on the chunk"),
    )  # fmt: skip
    await deliver(db, proposed(accounts[0], model, run, proposals[accounts[0]],
                               [buys[accounts[0]]], at(34)))  # fmt: skip
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["chunks_failed"] == 1 and progress["failed_chunks"] == [
        {"chunk": 1, "accounts": 1, "error": "engine failed on the chunk"}
    ]
    assert progress["trades"] == 2 and progress["expected_trades"] == 1
    assert progress["complete"] is False  # chunk 0 not in yet

    # Everything traded: still not complete until the last chunk arrives.
    for a in (accounts[0], accounts[2]):
        await deliver(db, approved(a, proposals[a], [buys[a]], at(40)))
        fid = f"X-{uuid.uuid4()}"
        await deliver(db, fill(a, buys[a], proposals[a], fid, "10", "20", at(41)))
        await deliver(db, holdings(a, at(42), "800", {"ZZA": "100", "ZZB": "10"}, fill_ids=[fid]))
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["trades_filled"] == 2 and progress["fills_reflected"] == 2
    assert progress["complete"] is False and progress["progress"] < 1
    await deliver(db, chunk_done(run, at(35), chunk=0, chunks=3, model=model))
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["chunks_completed"] == 2 and progress["chunks_failed"] == 1
    assert progress["expected_proposals"] == 2 and progress["expected_trades"] == 2
    assert progress["accounts"] == 3 and progress["accounts_skipped"] == 1
    assert progress["complete"] is True and progress["progress"] == 1.0
    # The failed chunk redone: a completed report replaces the failed one.
    await deliver(db, chunk_done(run, at(60), chunk=1, chunks=3, model=model, trades=1))
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["chunks_failed"] == 0 and progress["failed_chunks"] == []
    assert progress["expected_trades"] == 3 and progress["complete"] is False
    # ... and a late failed report of it changes nothing.
    await deliver(db, chunk_done(run, at(61), chunk=1, chunks=3, status="failed", model=model,
                                 proposals=0, trades=0, error="late"))  # fmt: skip
    assert (await client.get(f"/runs/{run}")).json()["chunks_completed"] == 3


async def test_a_scan_shows_its_trigger_not_an_accounts_model(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run = uuid.uuid4()
    await deliver(db, drift(account, model, run, at(29)))  # labelled with the account's model
    assert (await client.get(f"/runs/{run}")).json()["model_id"] == model
    await deliver(
        db,
        chunk_done(run, at(30), kind="scan", trigger="interval-scan", proposals=0, trades=0),
    )
    await deliver(db, drift(new_account(), new_model(), run, at(31)))
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["model_id"] == "*" and progress["model_version"] == 0
    assert progress["kind"] == "scan" and progress["trigger"] == "interval-scan"
    assert progress["accounts_measured"] == 2 and progress["complete"] is True
    scans = (await client.get("/runs", params={"kind": "scan"})).json()["items"]
    assert str(run) in [r["run_id"] for r in scans]
    assert all(r["kind"] == "scan" for r in scans)


# --- batches and failures -------------------------------------------------------------------


async def test_a_bad_snapshot_in_a_batch_is_dead_lettered_and_the_rest_applied(
    db: Database, client: httpx.AsyncClient
) -> None:
    model = new_model()
    await deliver(db, prices(0, ZZA="10", ZZB="20"))
    good = [new_account() for _ in range(3)]
    await account_changed_batch(db, good, model)
    bad = new_account()
    twice = example(
        "holdings-reconciled",
        account_id=bad,
        positions=[{"symbol": "ZZA", "quantity": "1", "cost_basis": "1"}] * 2,
    )
    records = [
        consumer_record(holdings(a, at(5), "100", {"ZZA": "3"}), i) for i, a in enumerate(good)
    ]
    records.insert(1, consumer_record(envelope(twice, key=bad, time=at(5)), 9))
    processor = service_consumer(db, "reporting-svc", SUBSCRIPTIONS)
    assert await processor.process(records) == {
        "processed": 3,
        "duplicate": 0,
        "dead_lettered": 1,
    }
    stored = await valuations(db, [*good, bad])
    assert {a: stored[a].market_value for a in good} == {a: Decimal(130) for a in good}
    assert bad not in stored or stored[bad].market_value is None
    async with db.sessions() as session:
        letter = (
            await session.execute(
                text("SELECT value FROM outbox WHERE topic = 'dlq.reporting-svc'"
                     " ORDER BY id DESC LIMIT 1")
            )
        ).scalar_one()  # fmt: skip
    assert f"holdings of {bad} list a security twice" in bytes(letter).decode()


async def test_a_snapshot_whose_stored_numbers_are_not_decimals_is_dead_lettered_naming_them(
    db: Database,
) -> None:
    """holdings-reconciled is decoded into reporting's view (the numbers stay text for the
    database): a lot quantity that is no decimal, or a negative basis, is refused there,
    naming the field; the rest of the batch is applied."""
    model = new_model()
    await deliver(db, prices(0, ZZA="10"))
    good, bad, negative = new_account(), new_account(), new_account()
    await account_changed_batch(db, [good, bad, negative], model)

    def with_lot(account: str, quantity: str, basis: str) -> bytes:
        """A snapshot whose lot's quantity and basis are written as given (the contract would
        refuse to build it)."""
        lot = {"lot_id": "L1", "quantity": "3.25", "acquired": "2026-01-05", "cost_basis": "26.99"}
        payload = ev.HoldingsReconciledV2.model_validate(
            {"account_id": account, "as_of": "2026-11-20", "cash": "100", "cause": "fills",
             "positions": [{"symbol": "ZZA", "quantity": "3", "cost_basis": "27",
                            "lots": [lot]}]}
        )  # fmt: skip
        raw = envelope(payload, key=account, time=at(5)).to_bytes().decode()
        return raw.replace('"3.25"', f'"{quantity}"').replace('"26.99"', f'"{basis}"').encode()

    records = [
        consumer_record(value, offset, topic="holdings-reconciled")
        for offset, value in enumerate(
            [with_lot(bad, "3 shares", "27"), with_lot(good, "3", "27"),
             with_lot(negative, "3", "-27")]
        )
    ]  # fmt: skip
    processor = service_consumer(db, "reporting-svc", SUBSCRIPTIONS)
    assert await processor.process(records) == {
        "processed": 1,
        "duplicate": 0,
        "dead_lettered": 2,
    }
    stored = await valuations(db, [good, bad, negative])
    assert stored[good].market_value == Decimal(130)
    assert all(a not in stored or stored[a].market_value is None for a in (bad, negative))
    async with db.sessions() as session:
        letters = [
            json.loads(bytes(v))["error"]
            for (v,) in await session.execute(
                text("SELECT value FROM outbox WHERE topic = 'dlq.reporting-svc' ORDER BY id")
            )
        ]
    assert letters[-2].startswith("invalid holdings-reconciled v2 payload: ")
    assert "positions.0.lots.0.quantity: String should match pattern" in letters[-2]
    assert "positions.0.lots.0.cost_basis: String should match pattern" in letters[-1]


async def test_a_verdict_whose_stored_fields_are_invalid_is_dead_lettered_naming_them(
    db: Database, client: httpx.AsyncClient
) -> None:
    """drift-detected is decoded into reporting's view (not each security's drift): a
    verdict field that is invalid is refused naming it, the rest of the batch is applied;
    the securities, which reporting does not store, are not validated."""
    model = new_model()
    good, unread, bad = new_account(), new_account(), new_account()
    await account_changed_batch(db, [good, unread, bad], model)
    run = uuid.uuid4()

    def verdict(account: str, **fields: Any) -> bytes:
        """A drift-detected message with `fields` of its payload written as given."""
        message = json.loads(drift(account, model, run, at(9)).to_bytes())
        message["payload"].update(fields)
        return json.dumps(message).encode()

    records = [
        consumer_record(value, offset, topic="drift-detected")
        for offset, value in enumerate(
            [verdict(good), verdict(bad, max_abs_drift="lots", out_of_tolerance="maybe"),
             verdict(unread, securities=[{"symbol": "ZZA", "drift": "not read"}])]
        )
    ]  # fmt: skip
    processor = service_consumer(db, "reporting-svc", SUBSCRIPTIONS)
    assert await processor.process(records) == {
        "processed": 2,
        "duplicate": 0,
        "dead_lettered": 1,
    }
    measured = (await client.get(f"/runs/{run}/accounts", params={"limit": 10})).json()
    assert sorted(i["account_id"] for i in measured["items"]) == sorted([good, unread])
    async with db.sessions() as session:
        letter = (
            await session.execute(
                text("SELECT value FROM outbox WHERE topic = 'dlq.reporting-svc'"
                     " ORDER BY id DESC LIMIT 1")
            )
        ).scalar_one()  # fmt: skip
    error = json.loads(bytes(letter))["error"]
    assert error.startswith("invalid drift-detected v1 payload: ")
    assert "max_abs_drift: " in error and "out_of_tolerance: " in error
    assert "securities" not in error


async def test_a_fill_racing_the_snapshot_that_reflects_it_is_counted_reflected(
    db: Database, client: httpx.AsyncClient
) -> None:
    """The snapshot's transaction holds the account; the fill's waits for it and then sees
    the reflection (without the account lock neither would see the other)."""
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    buy = trade("ZZB", "buy", "10", "20")
    await deliver(db, proposed(account, model, run, proposal, [buy], at(30)))
    await deliver(db, chunk_done(run, at(30), model=model))
    fid = f"X-{uuid.uuid4()}"
    snapshot = holdings(account, at(50), "800", {"ZZA": "100", "ZZB": "10"}, fill_ids=[fid])
    the_fill = fill(account, buy, proposal, fid, "10", "20", at(40))

    def delivery(env: Envelope) -> list[Delivery]:
        """Decoded as the consumer does (holdings-reconciled into its view)."""
        [subscription] = [s for s in SUBSCRIPTIONS if s.event_type == env.type]
        return [Delivery(*subscription.decode(env.to_bytes()))]

    async with unit_of_work(db, "reporting-svc") as first:
        await service.apply_holdings(first, delivery(snapshot))
        second = asyncio.create_task(_apply_fills(db, delivery(the_fill)))
        await _until_a_backend_waits_for_a_lock(db)
        assert not second.done()
    await asyncio.wait_for(second, 10)
    rows = (await client.get(f"/accounts/{account}/trades")).json()["items"]
    assert rows[0]["fills"] == 1 and rows[0]["fills_reflected"] == 1
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["fills_reflected"] == 1 and progress["complete"] is True


async def _apply_fills(db: Database, deliveries: list[Delivery]) -> Any:
    async with unit_of_work(db, "reporting-svc") as uow:
        return await service.apply_fills(uow, deliveries)


async def _until_a_backend_waits_for_a_lock(db: Database, timeout_s: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        async with db.engine.connect() as conn:
            waiting = (
                await conn.execute(
                    text("SELECT COUNT(*) FROM pg_stat_activity"
                         " WHERE datname = current_database() AND wait_event_type = 'Lock'")
                )
            ).scalar_one()  # fmt: skip
        if waiting:
            return
        assert loop.time() < deadline, "the second transaction never waited for the first"
        await asyncio.sleep(0.05)


# --- tallies --------------------------------------------------------------------------------

_RECOUNT = """
    SELECT (SELECT COUNT(*) FROM trades) AS trades,
           (SELECT COUNT(*) FROM trades WHERE status = 'filled') AS trades_filled,
           (SELECT COUNT(*) FROM trades WHERE status = 'partially_filled')
               AS trades_partially_filled,
           (SELECT COUNT(*) FROM trades WHERE status = 'proposed') AS trades_proposed,
           (SELECT COUNT(*) FROM trades WHERE status = 'rejected') AS trades_rejected,
           (SELECT COUNT(*) FROM fills) AS fills,
           (SELECT COUNT(*) FROM fills JOIN reconciled_fills USING (fill_id)) AS fills_reflected,
           (SELECT COUNT(*) FROM proposals) AS proposals,
           (SELECT COUNT(*) FROM account_valuations WHERE status IS NOT NULL) AS accounts,
           (SELECT COUNT(*) FROM account_valuations WHERE status IS NOT NULL
               AND out_of_tolerance) AS accounts_out_of_tolerance,
           (SELECT COALESCE(SUM(market_value), 0) FROM account_valuations) AS market_value
"""
_TALLIED = """
    SELECT SUM(trades) AS trades, SUM(trades_filled) AS trades_filled,
           SUM(trades_partially_filled) AS trades_partially_filled,
           SUM(trades_proposed) AS trades_proposed, SUM(trades_rejected) AS trades_rejected,
           SUM(fills) AS fills, SUM(fills_reflected) AS fills_reflected,
           SUM(proposals) AS proposals, SUM(accounts) AS accounts,
           SUM(accounts_out_of_tolerance) AS accounts_out_of_tolerance,
           SUM(market_value) AS market_value
      FROM book_tallies
"""


async def test_the_tallies_equal_a_recount_of_the_tables(
    db: Database, client: httpx.AsyncClient
) -> None:
    loaded = await load_sample(db, accounts=30, seed=3)
    # replay some of it: nothing may count twice
    await deliver(db, prices(0, ZZA="10"))
    async with db.engine.connect() as conn:
        recount = (await conn.execute(text(_RECOUNT))).mappings().one()
        tallied = (await conn.execute(text(_TALLIED))).mappings().one()
    assert dict(tallied) == dict(recount)
    run = (await client.get(f"/runs/{loaded['run_id']}")).json()
    async with db.engine.connect() as conn:
        run_recount = (
            (
                await conn.execute(
                    text(
                        "SELECT COUNT(*) AS trades, COUNT(*) FILTER (WHERE status = 'filled')"
                        " AS filled, COALESCE(SUM(fills), 0) AS fills,"
                        " COALESCE(SUM(fills_reflected), 0) AS reflected"
                        " FROM trades WHERE run_id = :run"
                    ),
                    {"run": loaded["run_id"]},
                )
            )
            .mappings()
            .one()
        )
    assert (run["trades"], run["trades_filled"], run["fills"], run["fills_reflected"]) == (
        run_recount["trades"], run_recount["filled"], run_recount["fills"],
        run_recount["reflected"],
    )  # fmt: skip
    assert run["trades"] > 0 and 0 < run["fills_reflected"] < run["fills"]


async def test_list_totals_from_tallies_agree_with_counting(
    db: Database, client: httpx.AsyncClient
) -> None:
    model = new_model()
    accounts = [new_account() for _ in range(4)]
    await account_changed_batch(db, accounts, model)
    run = uuid.uuid4()
    await deliver_batch(
        db, [drift(a, model, run, at(9), out=i % 2 == 0) for i, a in enumerate(accounts)]
    )
    summary = (await client.get("/summary")).json()
    totals = {}
    for flag in (None, True, False):
        params: dict[str, Any] = {"limit": 1}
        if flag is not None:
            params["out_of_tolerance"] = str(flag).lower()
        totals[flag] = (await client.get("/accounts", params=params)).json()["total"]
        # the same filter by counting: page through everything
        seen, offset = 0, 0
        while offset is not None:
            page = (
                await client.get("/accounts", params={**params, "limit": 1000, "offset": offset})
            ).json()
            seen += len(page["items"])
            offset = page["next_offset"]
        assert totals[flag] == seen
    assert totals[None] == summary["accounts"] == totals[True] + totals[False]
    assert totals[True] == summary["accounts_out_of_tolerance"]
    by_model = (await client.get("/accounts", params={"model_id": model, "limit": 1})).json()
    assert by_model["total"] == 4
    out_of_model = (
        await client.get(
            "/accounts", params={"model_id": model, "out_of_tolerance": "true", "limit": 1}
        )
    ).json()
    assert out_of_model["total"] == 2
