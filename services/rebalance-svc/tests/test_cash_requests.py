"""Cash requests on real PostgreSQL: POST /cash-requests checks every request (422 naming the
field), starts one run (trigger cash) over those due today, keeps the others waiting for a
sweep that starts each once; each request follows its run's outcome (proposed, done when its
trades settle, failed with the reason). Withdrawals are raised tax-efficiently."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from ballast_common import testing
from ballast_common.contracts.events import (
    AccountChangedV1,
    BandV1,
    FillsReceivedV1,
    HoldingsReconciledV2,
    LotV1,
    ModelChangedV1,
    ModelTargetV1,
    OrderRejectedV1,
    PositionV2,
    ProposalRejectedV1,
    RestrictionV1,
    SecuritiesChangedV1,
    SecurityV1,
    SleeveV1,
    StrategyV1,
    TaxSettingsV1,
)
from ballast_common.outbox import outbox
from ballast_common.testing import (
    api_client,
    bearer,
    eventually,
    migrated_database,
    unit_of_work,
)
from ballast_engine.rebalance import rebalance
from ballast_engine.scenario import scenario_from_dict
from rebalance_svc import cash_requests
from rebalance_svc.handlers import cash_sweep_loop, subscriptions
from rebalance_svc.main import spec
from rebalance_svc.settings import Settings
from rebalance_test_support import deliver, process_requested_chunks
from sqlalchemy import func, select, text

pytestmark = pytest.mark.integration
TODAY = datetime.now(UTC).date()
PRICES = {"CRA": "100", "CRB": "50", "CRC": "20", "CRT": "100"}


def account(account_id: str, **fields: Any) -> AccountChangedV1:
    base: dict[str, Any] = {
        "account_id": account_id,
        "household_id": f"HH-{account_id}",
        "name": account_id,
        "account_type": "taxable",
        "model_id": "cr-mix",
        "status": "active",
        "auto_approve": False,
    }
    return AccountChangedV1(**(base | fields))


def model(model_id: str, **weights: str) -> ModelChangedV1:
    return ModelChangedV1(
        model_id=model_id,
        name=model_id,
        version=1,
        changed_by="pm",
        targets=[ModelTargetV1(symbol=s, weight=Decimal(w)) for s, w in weights.items()],
    )


def lot(lot_id: str, quantity: str, cost: str, days_ago: int, sleeve: str | None = None) -> LotV1:
    return LotV1(
        lot_id=lot_id,
        quantity=Decimal(quantity),
        acquired=TODAY - timedelta(days=days_ago),
        cost_basis=Decimal(cost),
        sleeve_id=sleeve,
    )


def position(symbol: str, *lots: LotV1) -> PositionV2:
    return PositionV2(
        symbol=symbol,
        quantity=sum((x.quantity for x in lots), Decimal(0)),
        cost_basis=sum((x.cost_basis for x in lots), Decimal(0)),
        lots=list(lots),
    )


def holdings(account_id: str, cash: str, *positions: PositionV2, **extra: Any) -> Any:
    return HoldingsReconciledV2(
        account_id=account_id,
        household_id=f"HH-{account_id}",
        as_of=TODAY,
        cash=Decimal(cash),
        positions=list(positions),
        **({"cause": "opening-balance"} | extra),
    )


BAND = BandV1(width=Decimal("0.05"))
UMA = StrategyV1(
    sleeves=[
        SleeveV1(sleeve_id="g", model_id="cr-mix", weight=Decimal("0.6"), band=BAND),
        SleeveV1(sleeve_id="i", model_id="cr-income", weight=Decimal("0.4"), band=BAND),
    ],
    rebalance_range="target",
)


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    await deliver(
        database,
        SecuritiesChangedV1(
            securities=[
                SecurityV1(symbol=s, name=s, asset_class="US Equity", sector="IT", price=Decimal(p))
                for s, p in PRICES.items()
            ]
        ),
        "security-master",
    )
    for m in (
        model("cr-mix", CRA="0.5", CRB="0.5"),
        model("cr-income", CRC="1"),
        model("cr-one", CRT="1"),
    ):
        await deliver(database, m, m.model_id)
    mintax = TaxSettingsV1(relief_method="mintax")
    for event in (
        account("CR-SMA", tax_settings=mintax),  # 10,000 + 10,000 + 1,000 cash = 21,000
        account("CR-UMA", model_id=None, strategy=UMA, tax_settings=mintax),
        account("CR-TAX", model_id="cr-one", tax_settings=mintax),
        account(
            "CR-LOCKED",
            restrictions=[
                RestrictionV1(
                    kind="do_not_sell",
                    scope="security",
                    value=s,
                    source="client",
                    reason="legacy",
                    set_by="adv",
                )
                for s in ("CRA", "CRB")
            ],
        ),
        account("CR-LATER"),
    ):
        await deliver(database, event, event.account_id)
    # another tenant's account: unknown to this tenant's callers
    await testing.deliver(
        database, subscriptions(Settings()), testing.envelope(account("CR-THEIRS"), tenant="other")
    )
    await deliver(
        database,
        holdings(
            "CR-SMA",
            "1000",
            position("CRA", lot("SA1", "100", "9000", 400)),
            position("CRB", lot("SB1", "200", "9000", 400)),
        ),
        "CR-SMA",
    )
    # one security in three lots: a short-term gain, a long-term gain and a loss
    await deliver(
        database,
        holdings(
            "CR-TAX",
            "0",
            position(
                "CRT",
                lot("T-ST", "100", "5000", 60),
                lot("T-LT", "100", "8000", 800),
                lot("T-LOSS", "100", "12000", 500),
            ),
        ),
        "CR-TAX",
    )
    await deliver(
        database,
        holdings(
            "CR-UMA",
            "0",
            position("CRA", lot("UA", "60", "5000", 400, "g")),
            position("CRB", lot("UB", "120", "5000", 400, "g")),
            position("CRC", lot("UC", "200", "3000", 400, "i")),
        ),
        "CR-UMA",
    )
    for account_id in ("CR-LOCKED", "CR-LATER"):
        await deliver(
            database,
            holdings(
                account_id,
                "100",
                position("CRA", lot(f"{account_id}-A", "50", "4000", 400)),
                position("CRB", lot(f"{account_id}-B", "100", "4000", 400)),
            ),
            account_id,
        )
    yield database
    await database.dispose()


async def proposal_of(db, proposal_id: str) -> dict[str, Any]:
    async with db.sessions() as s:
        values = (
            await s.execute(select(outbox.c.value).where(outbox.c.topic == "trades-proposed"))
        ).scalars()
        proposals = [json.loads(v)["payload"] for v in values]
    [proposal] = [p for p in proposals if p["proposal_id"] == proposal_id]
    return proposal


async def post(api, *requests: dict[str, Any]) -> Any:
    return await api.post("/cash-requests", json={"requests": list(requests)})


async def stored_requests(db) -> int:
    async with db.sessions() as s:
        return (await s.execute(text("SELECT count(*) FROM cash_requests"))).scalar_one()


async def test_bad_requests_are_refused_naming_the_field_and_nothing_is_kept(db):
    async with api_client(spec, db) as api:
        before = await stored_requests(db)
        shapes = await post(
            api,
            {"account_id": "CR-SMA", "kind": "withdrawal", "amount": "0"},
            {"account_id": "CR-SMA", "kind": "withdrawal", "amount": "-5"},
            {"account_id": "CR-SMA", "kind": "withdrawal", "amount": "10.001"},
            {"account_id": "CR-SMA", "kind": "withdrawal", "amount": 10.5},
            {"account_id": "CR-SMA", "kind": "gift", "amount": "10"},
        )
        assert shapes.status_code == 422, shapes.text
        fields = {e["field"] for e in shapes.json()["errors"]}
        assert {f"requests[{i}].amount" for i in range(4)} <= fields
        assert "requests[4].kind" in fields
        assert (await post(api)).status_code == 422  # at least one request

        response = await post(
            api,
            {"account_id": "CR-SMA", "kind": "withdrawal", "amount": "21000.01"},
            {"account_id": "CR-NOPE", "kind": "deposit", "amount": "10"},
            {"account_id": "CR-THEIRS", "kind": "deposit", "amount": "10"},
            {"account_id": "CR-UMA", "kind": "withdrawal", "amount": "10", "sleeve_id": "zz"},
            {"account_id": "CR-TAX", "kind": "deposit", "amount": "10", "sleeve_id": "g"},
            {"account_id": "CR-SMA", "kind": "deposit", "amount": "10"},
            {"account_id": "CR-LATER", "kind": "deposit", "amount": "10", "on": "2020-01-02"},
        )
        assert response.status_code == 422, response.text
        problem = response.json()
        errors = {e["field"]: e["message"] for e in problem["errors"]}
        assert errors["requests[0].amount"] == (
            "a withdrawal of $21,000.01 is more than account CR-SMA is worth ($21,000.00: cash "
            "and holdings at their last prices)"
        )
        assert errors["requests[1].account_id"] == "unknown account CR-NOPE"
        assert errors["requests[2].account_id"] == "unknown account CR-THEIRS"
        assert (
            errors["requests[3].sleeve_id"] == "account CR-UMA has no sleeve zz (its sleeves: g, i)"
        )
        assert errors["requests[4].sleeve_id"] == (
            "account CR-TAX has no sleeve g (it has none: not a UMA)"
        )
        assert errors["requests[5].account_id"].startswith(
            "account CR-SMA is asked twice (also requests[0])"
        )
        assert errors["requests[6].on"] == f"2020-01-02 is past (today is {TODAY}, UTC)"
        assert len(errors) == 7 and problem["detail"].startswith("7 problem(s)")
        assert await stored_requests(db) == before  # all or none


async def test_a_withdrawal_due_today_starts_a_cash_run_and_follows_its_outcome(db):
    async with api_client(spec, db) as api:
        response = await post(
            api, {"account_id": "CR-SMA", "kind": "withdrawal", "amount": "10000", "note": "fees"}
        )
        assert response.status_code == 202, response.text
        body = response.json()
        run = body["run"]
        assert (run["trigger"], run["kind"], run["accounts"], run["chunks"]) == (
            "cash",
            "rebalance",
            1,
            1,
        )
        [request] = body["requests"]
        assert (request["status"], request["run_id"], request["on"]) == (
            "started",
            run["run_id"],
            str(TODAY),
        )
        assert (request["amount"], request["note"]) == ("10000.00", "fees")
        assert request["requested_by"]  # the token's subject
        [chunk] = await testing.outbox_events(db, "rebalance-chunk-requested", f"{run['run_id']}:0")
        assert chunk.payload.account_ids == ["CR-SMA"]

        assert await process_requested_chunks(db) == 1
        followed = (await api.get(f"/cash-requests/{request['request_id']}")).json()
        assert followed["status"] == "proposed" and followed["reason"] is None
        proposal = await proposal_of(db, followed["proposal_id"])
        assert {t["side"] for t in proposal["trades"]} == {"sell"}
        raised = sum(Decimal(t["estimated_value"]) for t in proposal["trades"])
        assert raised + Decimal(proposal["cash_before"]) >= Decimal("10000")
        assert {t["reason"] for t in proposal["trades"]} == {"cash_need"}

        done = (await api.get(f"/runs/{run['run_id']}")).json()
        assert (done["trigger"], done["complete"], done["proposals"]) == ("cash", True, 1)
        listed = (await api.get("/runs", params={"limit": 5})).json()["items"]
        assert run["run_id"] in {r["run_id"] for r in listed if r["trigger"] == "cash"}
        by_run = (await api.get("/cash-requests", params={"run_id": run["run_id"]})).json()
        assert [r["request_id"] for r in by_run["items"]] == [request["request_id"]]

        # the stored scenario (with the raise-cash request) replays to the same trades
        scenario = (await api.get(f"/runs/{run['run_id']}/scenarios/CR-SMA")).json()
        assert scenario["request"]["kind"] == "raise_cash"
        replayed = rebalance(scenario_from_dict(scenario))
        assert [(t.symbol, str(t.quantity)) for t in replayed.trades] == [
            (t["symbol"], t["quantity"]) for t in proposal["trades"]
        ]

        # a second request for the account waits while the first is in progress ...
        second = await post(api, {"account_id": "CR-SMA", "kind": "deposit", "amount": "500"})
        assert second.status_code == 202 and second.json()["run"] is None
        [waiting] = second.json()["requests"]
        assert waiting["status"] == "waiting"

        # ... which is done once its trades are filled and in the book of record
        fills = [
            FillsReceivedV1(
                fill_id=f"CR-F-{i}",
                client_order_id=f"CR-O-{i}",
                trade_id=t["trade_id"],
                proposal_id=proposal["proposal_id"],
                account_id="CR-SMA",
                symbol=t["symbol"],
                side=t["side"],
                quantity=Decimal(t["quantity"]),
                price=Decimal(t["estimated_price"]),
                executed_at=datetime.now(UTC),
            )
            for i, t in enumerate(proposal["trades"])
        ]
        await testing.deliver(db, subscriptions(Settings()), *fills)
        still = (await api.get(f"/cash-requests/{request['request_id']}")).json()
        assert still["status"] == "proposed"  # filled, not yet in the book of record
        sold = {t["symbol"]: Decimal(t["quantity"]) for t in proposal["trades"]}
        left = {"CRA": Decimal(100) - sold.get("CRA", 0), "CRB": Decimal(200) - sold.get("CRB", 0)}
        await deliver(
            db,
            holdings(
                "CR-SMA",
                str(Decimal(1000) + raised),
                *(
                    position(s, lot(f"S{s}", str(q), str(q * 90 if s == "CRA" else q * 45), 400))
                    for s, q in left.items()
                    if q > 0
                ),
                cause="fills",
                fill_ids=[f.fill_id for f in fills],
            ),
            "CR-SMA",
        )
        assert (await api.get(f"/cash-requests/{request['request_id']}")).json()["status"] == "done"

        # the sweep (of two replicas) starts the waiting deposit now
        def runtime() -> Any:
            return SimpleNamespace(
                settings=Settings(cash_sweep_interval_seconds=0.2),
                uow=lambda: unit_of_work(db, "rebalance-svc"),
            )

        tasks = [asyncio.create_task(cash_sweep_loop(runtime())) for _ in "ab"]

        async def started() -> dict[str, Any] | None:
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks]
            now = (await api.get(f"/cash-requests/{waiting['request_id']}")).json()
            return now if now["status"] != "waiting" else None

        try:
            now = await eventually("the sweep starting the waiting request", started, 10, 0.05)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert now["status"] == "started"
        swept = (await api.get(f"/runs/{now['run_id']}")).json()
        assert (swept["trigger"], swept["accounts"], swept["started_by"]) == ("cash", 1, None)
        await process_requested_chunks(db)
        invested = (await api.get(f"/cash-requests/{waiting['request_id']}")).json()
        assert invested["status"] == "proposed", invested
        deposit = await proposal_of(db, invested["proposal_id"])
        assert {t["side"] for t in deposit["trades"]} == {"buy"}


async def test_a_withdrawal_sells_losses_and_long_term_lots_before_short_term_gains(db):
    """One security in three lots at $100: bought at $50 two months ago (short-term gain),
    at $80 two years ago (long-term gain), at $120 (loss). $15,000 takes 150 shares: the loss
    lot and half the long-term lot, none of the short-term gain."""
    async with api_client(spec, db) as api:
        response = await post(
            api, {"account_id": "CR-TAX", "kind": "withdrawal", "amount": "15000"}
        )
        assert response.status_code == 202, response.text
        await process_requested_chunks(db)
        [request] = response.json()["requests"]
        followed = (await api.get(f"/cash-requests/{request['request_id']}")).json()
        assert followed["status"] == "proposed", followed
        [sale] = (await proposal_of(db, followed["proposal_id"]))["trades"]
        assert (sale["symbol"], sale["side"], Decimal(sale["quantity"])) == ("CRT", "sell", 150)
        assert sale["lot_ids"] == ["T-LOSS", "T-LT"]
        # a $2,000 loss against a $1,000 long-term gain: tax saved
        assert Decimal(sale["estimated_tax"]) < 0


async def test_a_uma_withdrawal_moves_cash_for_the_withdrawal_from_the_sleeves(db):
    async with api_client(spec, db) as api:
        whole = await post(api, {"account_id": "CR-UMA", "kind": "withdrawal", "amount": "3000"})
        assert whole.status_code == 202, whole.text
        await process_requested_chunks(db)
        [request] = whole.json()["requests"]
        followed = (await api.get(f"/cash-requests/{request['request_id']}")).json()
        assert followed["status"] == "proposed", followed
        proposal = await proposal_of(db, followed["proposal_id"])
        assert {t["side"] for t in proposal["trades"]} == {"sell"}
        moves = proposal["cash_movements"]
        assert moves and {m["purpose"] for m in moves} == {"withdrawal"}
        assert all(m["to_sleeve"] is None for m in moves)
        assert sum(Decimal(m["amount"]) for m in moves) == Decimal("3000.00")
        # declined: the request fails saying so, and the account can trade again
        await testing.deliver(
            db,
            subscriptions(Settings()),
            ProposalRejectedV1(
                proposal_id=proposal["proposal_id"],
                account_id="CR-UMA",
                rejected_by="reviewer",
                reason="not this week",
            ),
        )
        declined = (await api.get(f"/cash-requests/{request['request_id']}")).json()
        assert declined["status"] == "failed"
        assert declined["reason"] == "its proposal was rejected by reviewer: not this week"

        # from a named sleeve: only that sleeve sells, and pays the withdrawal
        named = await post(
            api,
            {"account_id": "CR-UMA", "kind": "withdrawal", "amount": "1000", "sleeve_id": "i"},
        )
        assert named.status_code == 202, named.text
        await process_requested_chunks(db)
        [request] = named.json()["requests"]
        followed = (await api.get(f"/cash-requests/{request['request_id']}")).json()
        assert followed["status"] == "proposed", followed
        proposal = await proposal_of(db, followed["proposal_id"])
        assert {(t["sleeve_id"], t["symbol"], t["side"]) for t in proposal["trades"]} == {
            ("i", "CRC", "sell")
        }
        assert [
            (m["from_sleeve"], m["to_sleeve"], m["purpose"]) for m in proposal["cash_movements"]
        ] == [("i", None, "withdrawal")]


async def test_a_withdrawal_the_engine_cannot_raise_fails_with_its_reason(db):
    async with api_client(spec, db) as api:
        response = await post(
            api,
            {"account_id": "CR-LOCKED", "kind": "withdrawal", "amount": "5000"},
            {"account_id": "CR-THEIRS", "kind": "withdrawal", "amount": "1"},
        )
        assert response.status_code == 422  # all or none: nothing started
        response = await post(
            api, {"account_id": "CR-LOCKED", "kind": "withdrawal", "amount": "5000"}
        )
        assert response.status_code == 202, response.text
        await process_requested_chunks(db)
        [request] = response.json()["requests"]
        failed = (await api.get(f"/cash-requests/{request['request_id']}")).json()
        assert failed["status"] == "failed" and failed["proposal_id"] is None
        assert failed["reason"] == (
            "the withdrawal of $5,000.00 is $4,900.00 short: the sleeves cannot raise more "
            "(restricted holdings or reserves)"
        )
        listed = (
            await api.get("/cash-requests", params={"account_id": "CR-LOCKED", "status": "failed"})
        ).json()
        assert [r["request_id"] for r in listed["items"]] == [request["request_id"]]
        assert (
            await api.get(f"/cash-requests/{'0' * 8}-0000-4000-8000-{'0' * 12}")
        ).status_code == 404


async def test_a_future_request_waits_and_one_of_two_sweepers_starts_it_once(db):
    later = TODAY + timedelta(days=3)
    async with api_client(spec, db) as api:
        response = await post(
            api,
            {"account_id": "CR-LATER", "kind": "withdrawal", "amount": "2000", "on": str(later)},
        )
        assert response.status_code == 202, response.text
        assert response.json()["run"] is None
        [request] = response.json()["requests"]
        assert (request["status"], request["on"]) == ("waiting", str(later))
        settings = Settings()

        async def sweep(day: date) -> list[Any]:
            async with unit_of_work(db, "rebalance-svc") as uow:
                return await cash_requests.start_due(uow, settings, day)

        assert await sweep(TODAY) == []  # not due yet
        first, second = await asyncio.gather(sweep(later), sweep(later))
        runs = first + second
        assert len(runs) == 1 and runs[0].trigger == "cash" and runs[0].accounts == 1
        assert await sweep(later) == []
        started = (await api.get(f"/cash-requests/{request['request_id']}")).json()
        assert (started["status"], started["run_id"]) == ("started", runs[0].run_id)
        async with db.sessions() as s:
            chunks = await s.execute(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.topic == "rebalance-chunk-requested")
                .where(outbox.c.key.like(f"{runs[0].run_id}:%"))
            )
            assert chunks.scalar_one() == 1
        await process_requested_chunks(db)
        proposed = (await api.get(f"/cash-requests/{request['request_id']}")).json()
        assert proposed["status"] == "proposed", proposed

        # the custodian rejects one of its two sales: the request failed, saying so ...
        trades = (await proposal_of(db, proposed["proposal_id"]))["trades"]
        assert len(trades) == 2, trades
        rejected = trades[0]
        await testing.deliver(
            db,
            subscriptions(Settings()),
            OrderRejectedV1(
                client_order_id="CR-O-REJ",
                trade_id=rejected["trade_id"],
                proposal_id=proposed["proposal_id"],
                account_id="CR-LATER",
                symbol=rejected["symbol"],
                side=rejected["side"],
                quantity=Decimal(rejected["quantity"]),
                reason="halted",
            ),
        )
        failed = (await api.get(f"/cash-requests/{request['request_id']}")).json()
        assert (failed["status"], failed["reason"]) == (
            "failed",
            f"the custodian rejected the sell of {rejected['symbol']}: halted",
        )
        # ... and while its other sale is in flight, a new request of the account waits
        again = await post(api, {"account_id": "CR-LATER", "kind": "deposit", "amount": "50"})
        assert again.status_code == 202 and again.json()["run"] is None
        assert again.json()["requests"][0]["status"] == "waiting"


async def test_another_tenants_cash_requests_are_not_found(db):
    async with api_client(spec, db) as api:
        listed = (await api.get("/cash-requests", params={"account_id": "CR-SMA"})).json()
        mine = listed["items"][0]["request_id"]
        theirs = bearer("other")
        assert (await api.get(f"/cash-requests/{mine}", headers=theirs)).status_code == 404
        other_list = (await api.get("/cash-requests", headers=theirs)).json()
        assert mine not in {r["request_id"] for r in other_list["items"]}
        refused = await api.post(
            "/cash-requests",
            json={"requests": [{"account_id": "CR-SMA", "kind": "deposit", "amount": "1"}]},
            headers=theirs,
        )
        assert refused.status_code == 422
        assert refused.json()["errors"] == [
            {"field": "requests[0].account_id", "message": "unknown account CR-SMA"}
        ]
        paged = (await api.get("/cash-requests", params={"limit": 1})).json()
        assert len(paged["items"]) == 1 and paged["next_offset"] == 1
