"""rebalance-svc on real PostgreSQL with per-account settings, restrictions, UMAs (sleeves),
lots and loss sales from holdings-reconciled v2, and the drift scan (service and REST)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from ballast_common.contracts.events import (
    AccountChangedV1,
    BandV1,
    EquivalenceSetChangedV1,
    HoldingsReconciledV2,
    LossSaleV1,
    LotV1,
    ModelChangedV1,
    ModelTargetV1,
    PositionV2,
    RebalanceSettingsV1,
    RestrictionV1,
    SecuritiesChangedV1,
    SecurityV1,
    SleeveV1,
    StrategyV1,
    TaxSettingsV1,
)
from ballast_common.outbox import outbox
from ballast_common.testing import TEST_TENANT, api_client, migrated_database, unit_of_work
from ballast_engine.rebalance import rebalance
from ballast_engine.scenario import scenario_from_dict
from rebalance_svc import preparation, repository, service
from rebalance_svc.handlers import scan_loop
from rebalance_svc.main import spec
from rebalance_svc.schemas import RunOut
from rebalance_svc.settings import Settings
from rebalance_test_support import decline_trades_in_flight, deliver, process_requested_chunks
from sqlalchemy import select, text

pytestmark = pytest.mark.integration
MINE = ("H-SMA", "H-UMA", "H-IRA")


async def run_of(db, model_id: str, version: int) -> RunOut:
    """The one run of a model version, with why accounts were skipped."""
    async with db.sessions() as s:
        [run] = await repository.list_runs(s, model_id, version, 5, tenant=None)
        return await service.run_with_skipped(s, run.run_id, tenant=None)


async def published(db, topic: str) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        rows = await s.execute(
            select(outbox.c.value).where(outbox.c.topic == topic).order_by(outbox.c.id)
        )
    return [json.loads(r[0])["payload"] for r in rows]


def account(account_id: str, **fields: Any) -> AccountChangedV1:
    base: dict[str, Any] = {
        "account_id": account_id,
        "household_id": "HH-H3",
        "name": account_id,
        "account_type": "taxable",
        "model_id": "h3-growth",
        "status": "active",
        "auto_approve": True,
    }
    return AccountChangedV1(**(base | fields))


def model(model_id: str, version: int, **weights: str) -> ModelChangedV1:
    return ModelChangedV1(
        model_id=model_id,
        name=model_id,
        version=version,
        changed_by="pm",
        targets=[ModelTargetV1(symbol=s, weight=Decimal(w)) for s, w in weights.items()],
    )


def lot(lot_id: str, quantity: str, cost: str, sleeve_id: str | None = None) -> LotV1:
    return LotV1(
        lot_id=lot_id,
        quantity=Decimal(quantity),
        acquired=date(2025, 6, 2),
        cost_basis=Decimal(cost),
        sleeve_id=sleeve_id,
    )


def holdings(account_id: str, cash: str, *positions: PositionV2, **extra: Any) -> Any:
    return HoldingsReconciledV2(
        account_id=account_id,
        household_id="HH-H3",
        as_of=date(2026, 11, 20),
        cash=Decimal(cash),
        positions=list(positions),
        cause="opening-balance",
        **extra,
    )


def position(symbol: str, quantity: str, *lots: LotV1) -> PositionV2:
    basis = sum((x.cost_basis for x in lots), Decimal(0))
    return PositionV2(symbol=symbol, quantity=Decimal(quantity), cost_basis=basis, lots=list(lots))


UMA_STRATEGY = StrategyV1(
    sleeves=[
        SleeveV1(
            sleeve_id="g",
            model_id="h3-growth",
            weight=Decimal("0.6"),
            band=BandV1(width=Decimal("0.05")),
        ),
        SleeveV1(
            sleeve_id="i",
            model_id="h3-income",
            weight=Decimal("0.4"),
            band=BandV1(width=Decimal("0.05")),
        ),
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
                SecurityV1(
                    symbol=s,
                    name=s,
                    asset_class=cls,
                    sector=sector,
                    price=Decimal(p),
                    fractional_eligible=frac,
                )
                for s, p, cls, sector, frac in (
                    ("HA1", "310", "US Equity", "IT", True),
                    ("HA2", "50", "US Equity", "Energy", False),
                    ("HB1", "20", "Bonds", "Fixed", False),
                    ("HX", "10", "US Equity", "Energy", False),
                )
            ]
        ),
        "security-master",
    )
    # an SMA with its own settings and restrictions (no Energy, nothing from the ESG list)
    await deliver(
        database,
        account(
            "H-SMA",
            rebalance_settings=RebalanceSettingsV1(
                fractional=True, freed_cash="cash", min_trade_value=Decimal("0")
            ),
            restrictions=[
                RestrictionV1(
                    kind="do_not_buy",
                    scope="sector",
                    value="Energy",
                    source="client",
                    reason="fossil-fuel screen",
                    set_by="adv",
                ),
                RestrictionV1(
                    kind="do_not_hold",
                    scope="list",
                    value="h3-esg",
                    source="firm",
                    reason="ESG",
                    set_by="cio",
                    symbols=["HX"],
                ),
            ],
            tax_settings=TaxSettingsV1(relief_method="hifo", gain_budget=Decimal("5000")),
        ),
        "H-SMA",
    )
    await deliver(database, account("H-UMA", model_id=None, strategy=UMA_STRATEGY), "H-UMA")
    await deliver(database, account("H-IRA", account_type="ira", status="suspended"), "H-IRA")
    await deliver(
        database,
        holdings(
            "H-SMA",
            "10000",
            position("HX", "20", lot("X1", "20", "260")),
            recent_loss_sales=[
                LossSaleV1(  # outside the wash-sale window: blocks nothing
                    symbol="HA1",
                    sold_on=date(2026, 9, 1),
                    quantity=Decimal("3"),
                    loss_per_share=Decimal("12.5"),
                )
            ],
        ),
        "H-SMA",
    )
    await deliver(
        database,
        holdings(
            "H-UMA",
            "0",
            position("HA1", "30", lot("U1", "20", "5000", "g"), lot("U2", "10", "3100")),
            position("HA2", "60"),
            position("HB1", "50", lot("U3", "50", "1100", "i")),
        ),
        "H-UMA",
    )
    yield database
    await database.dispose()


async def test_a_model_change_uses_each_accounts_settings_and_restrictions(db):
    await deliver(db, model("h3-growth", 1, HA1="0.5", HA2="0.5"), "h3-growth")
    run = await run_of(db, "h3-growth", 1)
    # the UMA also has a sleeve on h3-growth, but its other model is not published yet
    assert run.skipped == {
        "H-IRA": "account is suspended",
        "H-UMA": "model h3-income not published yet",
    }
    proposals = {p["account_id"]: p for p in await published(db, "trades-proposed")}
    trades = [
        (t["symbol"], t["side"], t["quantity"], t["reason"]) for t in proposals["H-SMA"]["trades"]
    ]
    # fractional HA1 for its half; Energy (HA2) is do-not-buy and its weight stays cash
    # (freed_cash "cash"); HX is on the firm's ESG list: do-not-hold, sold
    assert sorted(trades) == [
        ("HA1", "buy", "16.451", "drift"),
        ("HX", "sell", "20", "restriction"),
    ]
    assert all(t["sleeve_id"] is None for t in proposals["H-SMA"]["trades"])
    # the book of record sent lots: the sale names its lot and its tax (a long-term loss of
    # $60 at 20% saves $12)
    [sell] = [t for t in proposals["H-SMA"]["trades"] if t["side"] == "sell"]
    assert sell["lot_ids"] == ["X1"] and Decimal(sell["estimated_tax"]) == Decimal("-12")
    assert "fossil" not in json.dumps(proposals["H-SMA"])  # the engine names the source only
    async with db.sessions() as s:
        stored = await repository.get_scenario(s, run.run_id, "H-SMA", tenant=None)
    scenario = scenario_from_dict(stored)
    assert scenario.account.sleeves[0].holdings[0].lots[0].lot_id == "X1"
    assert scenario.reference.lists == {"h3-esg": frozenset({"HX"})}
    replayed = rebalance(scenario)
    assert (
        sorted((t.symbol, t.side.value, str(t.quantity), t.reason.value) for t in replayed.trades)
        == trades
    )


async def test_a_recent_loss_in_the_household_blocks_buying_it_back(db):
    """A loss sale of HA1 ten days ago (reported with another account's holdings) would be
    washed by buying HA1 now: the model change buys no HA1 in any account of the household."""
    sold_on = datetime.now(UTC).date() - timedelta(days=10)
    sale = LossSaleV1(
        symbol="HA1", sold_on=sold_on, quantity=Decimal("5"), loss_per_share=Decimal("4")
    )
    await deliver(db, holdings("H-PEER", "50", recent_loss_sales=[sale]), "H-PEER")
    await deliver(db, model("h3-growth", 2, HA1="0.6", HA2="0.4"), "h3-growth")
    run = await run_of(db, "h3-growth", 2)
    [proposal] = [
        p for p in await published(db, "trades-proposed")
        if p["run_id"] == run.run_id and p["account_id"] == "H-SMA"
    ]  # fmt: skip
    assert not [t for t in proposal["trades"] if t["symbol"] == "HA1" and t["side"] == "buy"]
    async with db.sessions() as s:
        stored = await repository.get_scenario(s, run.run_id, "H-SMA", tenant=None)
    scenario = scenario_from_dict(stored)
    assert [x.symbol for x in scenario.account.tax.recent_loss_sales] == ["HA1"]
    result = rebalance(scenario)
    assert any(n.code == "wash_sale_buy_block" for n in result.notices)
    await deliver(db, holdings("H-PEER", "50"), "H-PEER")  # the sale leaves the window


async def test_the_households_recent_purchases_are_the_lots_acquired_in_the_window(db):
    """Only lots acquired on or after the window's start come back, of every account in the
    household; a position whose lots are all older is not read at all."""
    today = datetime.now(UTC).date()

    def bought(lot_id: str, days_ago: int) -> LotV1:
        return lot(lot_id, "5", "50").model_copy(update={"acquired": today - timedelta(days_ago)})

    peer = holdings(
        "H-PEER2",
        "10",
        position("HA1", "10", bought("R1", 3), bought("O1", 400)),
        position("HA2", "5", bought("O2", 90)),
    )
    await deliver(db, peer, "H-PEER2")
    since = today - timedelta(days=30)
    async with db.sessions() as s:
        found = await repository.household_lots(s, ["HH-H3"], since)
        [(household, _, symbol, lots)] = [r for r in found if r[1] == "H-PEER2"]
        last = await s.execute(
            text("SELECT symbol, last_acquired FROM holdings WHERE account_id = 'H-PEER2'")
        )
        assert dict(last.all()) == {"HA1": today - timedelta(3), "HA2": today - timedelta(90)}
    assert (household, symbol, [x["lot_id"] for x in lots]) == ("HH-H3", "HA1", ["R1"])
    await deliver(db, holdings("H-PEER2", "10"), "H-PEER2")


async def test_a_uma_is_rebalanced_across_its_sleeves_when_one_of_its_models_changes(db):
    await deliver(db, model("h3-income", 1, HB1="1"), "h3-income")
    run = await run_of(db, "h3-income", 1)
    assert "H-UMA" not in run.skipped
    [proposal] = [p for p in await published(db, "trades-proposed") if p["run_id"] == run.run_id]
    assert (proposal["account_id"], proposal["model_id"]) == ("H-UMA", "h3-income")
    trades = {(t["sleeve_id"], t["symbol"], t["side"], t["quantity"]) for t in proposal["trades"]}
    # growth holds $9,300 + $3,000 of $13,300 (92.5% against 60% ± 5): cash moves to income
    async with db.sessions() as s:
        stored = await repository.get_scenario(s, run.run_id, "H-UMA", tenant=None)
    scenario = scenario_from_dict(stored)
    expected = rebalance(scenario)
    assert trades == {
        (t.sleeve_id, t.symbol, t.side.value, str(t.quantity)) for t in expected.trades
    }
    assert {t[0] for t in trades} == {"g", "i"}
    [move] = expected.cash_movements
    assert (move.from_sleeve, move.to_sleeve) == ("g", "i") and move.amount > 0
    growth, income = scenario.account.sleeves
    assert [(h.symbol, h.quantity, [x.lot_id for x in h.lots]) for h in growth.holdings] == [
        ("HA1", 30.0, ["U1", "U2"]),
        ("HA2", 60.0, []),
    ]
    assert [(h.symbol, [x.lot_id for x in h.lots]) for h in income.holdings] == [("HB1", ["U3"])]
    [drift] = [d for d in await published(db, "drift-detected") if d["run_id"] == run.run_id]
    assert drift["account_id"] == "H-UMA"


async def test_a_bad_uma_is_skipped_with_the_engines_reason_and_the_rest_still_goes(db):
    bad = StrategyV1(
        sleeves=[
            SleeveV1(
                sleeve_id="g",
                model_id="h3-growth",
                weight=Decimal("0.7"),
                band=BandV1(width=Decimal("0.05")),
            ),
            SleeveV1(
                sleeve_id="i",
                model_id="h3-income",
                weight=Decimal("0.4"),
                band=BandV1(width=Decimal("0.05")),
            ),
        ]
    )
    await deliver(db, account("H-BAD", model_id=None, strategy=bad), "H-BAD")
    await deliver(db, holdings("H-BAD", "5000"), "H-BAD")
    await deliver(db, model("h3-income", 2, HB1="1"), "h3-income")
    run = await run_of(db, "h3-income", 2)
    assert "model weights add up to 110" in run.skipped["H-BAD"]
    assert "H-BAD" in run.skipped["H-BAD"]
    proposed = {
        p["account_id"] for p in await published(db, "trades-proposed") if p["run_id"] == run.run_id
    }
    assert proposed == {"H-UMA"}


async def test_tax_settings_and_household_loss_sales_reach_the_engine_input(db):
    await decline_trades_in_flight(db)
    async with db.sessions() as s:
        accounts = await repository.accounts_by_ids(s, list(MINE))
        prepared = await preparation.prepare(s, accounts, Settings(), [])
    sma = prepared.taxes["H-SMA"]
    assert (sma.household_id, sma.settings.relief_method, sma.settings.gain_budget) == (
        "HH-H3",
        "hifo",
        Decimal("5000"),
    )
    # the loss sale came with H-SMA's holdings; H-UMA is in the same household
    assert [s.symbol for s in prepared.taxes["H-UMA"].recent_loss_sales] == ["HA1"]
    assert prepared.taxes["H-UMA"].settings == TaxSettingsV1()
    assert set(prepared.accounts) == {"H-SMA", "H-UMA"}


async def test_a_scan_reports_every_account_and_rebalances_only_those_out_of_band(db):
    await decline_trades_in_flight(db)  # the model changes' proposals above went nowhere
    async with api_client(spec, db) as api:
        response = await api.post("/scans")
        assert response.status_code == 202, response.text
        planned = response.json()
        assert (planned["kind"], planned["complete"], planned["chunks"]) == ("scan", False, 1)
        assert await process_requested_chunks(db) == 1
        run = (await api.get(f"/runs/{planned['run_id']}")).json()
        assert (run["trigger"], run["model_id"], run["proposals"]) == ("scan", "*", 0)
        assert run["complete"] and run["chunks_done"] == 1
        drift = {
            d["account_id"]: d
            for d in await published(db, "drift-detected")
            if d["run_id"] == run["run_id"]
        }
        # both active accounts with holdings are scanned; the suspended one is skipped
        assert {"H-SMA", "H-UMA"} <= set(drift) and "H-IRA" not in drift
        assert run["skipped"]["H-IRA"] == "account is suspended"
        assert drift["H-SMA"]["out_of_tolerance"] is True  # all cash against a 0% cash target
        assert drift["H-UMA"]["model_id"] == "h3-growth"  # its largest sleeve's model
        assert {s["symbol"] for s in drift["H-UMA"]["securities"]} == {"HA1", "HA2", "HB1"}

        response = await api.post("/scans", json={"rebalance": True})
        await process_requested_chunks(db)
        run = (await api.get(f"/runs/{response.json()['run_id']}")).json()
        assert (run["trigger"], run["rebalance_out_of_tolerance"]) == ("scan", True)
        out = {
            d["account_id"]
            for d in await published(db, "drift-detected")
            if d["run_id"] == run["run_id"] and d["out_of_tolerance"]
        }
        proposed = {
            p["account_id"]
            for p in await published(db, "trades-proposed")
            if p["run_id"] == run["run_id"]
        }
        assert {"H-SMA", "H-UMA"} <= out and proposed <= out and {"H-SMA", "H-UMA"} <= proposed
        assert run["proposals"] == len(proposed)

        some = sorted(proposed)[0]
        scenario = await api.get(f"/runs/{run['run_id']}/scenarios/{some}")
        assert scenario.status_code == 200 and scenario.json()["account"]["account_id"] == some
        assert (await api.get(f"/runs/{run['run_id']}/scenarios/H-IRA")).status_code == 404
        listed = (await api.get("/runs", params={"model_id": "*", "limit": 2})).json()
        assert [r["rebalance_out_of_tolerance"] for r in listed["items"]] == [True, False]
        rest = (await api.get("/runs", params={"model_id": "*", "offset": 2})).json()["items"]
        assert not {r["run_id"] for r in listed["items"]} & {r["run_id"] for r in rest}
        bad = await api.post("/scans", json={"rebalance": "maybe"})
        assert bad.status_code == 422
        status = (await api.get("/read-model")).json()
        assert status["uma_sleeves"] >= 2 and status["security_lists"] >= 1


async def test_the_interval_scan_is_off_by_default_and_runs_when_set(db):
    def runtime(**settings: Any) -> Any:
        return SimpleNamespace(
            settings=Settings(**settings), uow=lambda: unit_of_work(db, "rebalance-svc")
        )

    await asyncio.wait_for(scan_loop(runtime()), timeout=1)  # returns at once: off
    # two replicas' loops: one run of the tenant per interval, whichever replica starts it
    tasks = [asyncio.create_task(scan_loop(runtime(scan_interval_seconds=0.3))) for _ in "ab"]
    try:
        for _ in range(200):
            async with db.sessions() as s:
                runs = await repository.list_runs(s, "*", None, 50, tenant=TEST_TENANT)
            scans = [r for r in runs if r.trigger == "interval-scan"]
            if len(scans) >= 3:
                break
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.05)
        else:
            pytest.fail("no interval scan ran")
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    starts = sorted(r.started_at for r in scans)
    assert all(b - a > timedelta(seconds=0.15) for a, b in itertools.pairwise(starts))


async def test_a_harvest_sells_the_losing_lots_and_buys_the_equivalent(db):
    """H-TLH (a household of its own) holds 40 HA2 bought at $75 (now $50: a $1,000 loss, 33%
    of basis); HX is equivalent to HA2. The harvest sells the lot and buys HX to keep the
    exposure; accounts with harvesting off are not touched unless named (then skipped)."""
    await decline_trades_in_flight(db)
    pair = EquivalenceSetChangedV1(set_id="h3-energy", name="Energy", members=["HA2", "HX"],
                                   version=1)  # fmt: skip
    tlh = account(
        "H-TLH",
        household_id="HH-TLH",
        tax_settings=TaxSettingsV1(harvest=True, relief_method="mintax"),
    )
    await deliver(db, tlh, "H-TLH")
    loser = LotV1(lot_id="T1", quantity=Decimal("40"), acquired=date(2026, 3, 2),
                  cost_basis=Decimal("3000"))  # fmt: skip
    book = holdings("H-TLH", "100", position("HA2", "40", loser))
    await deliver(db, book.model_copy(update={"household_id": "HH-TLH"}), "H-TLH")
    await deliver(db, pair, "h3-energy")
    try:
        async with api_client(spec, db) as api:
            response = await api.post("/harvests")
            assert response.status_code == 202, response.text
            await process_requested_chunks(db)
            run = (await api.get(f"/runs/{response.json()['run_id']}")).json()
            assert (run["kind"], run["trigger"], run["complete"]) == ("harvest", "harvest", True)
            [proposal] = [
                p for p in await published(db, "trades-proposed") if p["run_id"] == run["run_id"]
            ]
            assert proposal["account_id"] == "H-TLH" and run["proposals"] == 1
            trades = {(t["side"], t["symbol"]): t for t in proposal["trades"]}
            sell, buy = trades[("sell", "HA2")], trades[("buy", "HX")]
            assert sell["reason"] == "tax-loss-harvest" and sell["lot_ids"] == ["T1"]
            assert sell["quantity"] == "40" and Decimal(sell["estimated_tax"]) < 0
            assert Decimal(buy["estimated_value"]) <= Decimal(sell["estimated_value"]) + 100
            stored = await api.get(f"/runs/{run['run_id']}/scenarios/H-TLH")
            assert stored.status_code == 200

            named = await api.post("/harvests", json={"accounts": ["H-SMA"]})
            assert named.status_code == 202 and named.json()["accounts"] == 1
            await process_requested_chunks(db)
            named_run = (await api.get(f"/runs/{named.json()['run_id']}")).json()
            assert "harvesting is off" in named_run["skipped"]["H-SMA"]
            unknown = await api.post("/harvests", json={"accounts": ["H-SMA", "NOPE"]})
            assert unknown.status_code == 422
            assert unknown.json()["errors"][0]["field"] == "accounts[1]"
    finally:
        gone = EquivalenceSetChangedV1(set_id="h3-energy", name="Energy", members=[],
                                       removed=True, version=2)  # fmt: skip
        await deliver(db, gone, "h3-energy")
