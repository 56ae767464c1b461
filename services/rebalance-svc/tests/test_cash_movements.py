"""A UMA's strategic rebalance moves cash between its sleeves; trades-proposed carries those
movements (`cash_movements`), so that the book of record books them when the trades are
approved. An SMA's proposal has none."""

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import rebalance_test_support as support
from ballast_common.contracts.events import (
    AccountChangedV1,
    BandV1,
    HoldingsReconciledV2,
    LotV1,
    ModelChangedV1,
    ModelTargetV1,
    PositionV2,
    SecuritiesChangedV1,
    SecurityV1,
    SleeveCashV1,
    SleeveV1,
    StrategyV1,
)
from ballast_common.outbox import outbox
from ballast_common.testing import migrated_database
from ballast_engine.rebalance import rebalance
from ballast_engine.scenario import scenario_from_dict
from rebalance_svc import repository
from rebalance_svc.main import spec
from sqlalchemy import select

pytestmark = pytest.mark.integration
D = Decimal
GROWTH, INCOME = "cm-growth", "cm-income"
EQUITY, BOND = "CMEQ", "CMBND"


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


def account(account_id: str, strategy: StrategyV1 | None) -> AccountChangedV1:
    return AccountChangedV1(
        account_id=account_id,
        household_id=f"HH-{account_id}",
        name=account_id,
        account_type="ira",
        model_id=None if strategy else GROWTH,
        status="active",
        auto_approve=True,
        strategy=strategy,
    )


def uma_strategy() -> StrategyV1:
    band = BandV1(kind="absolute", width=D("0.05"))
    return StrategyV1(
        sleeves=[
            SleeveV1(sleeve_id="A", model_id=GROWTH, weight=D("0.6"), band=band),
            SleeveV1(sleeve_id="B", model_id=INCOME, weight=D("0.4"), band=band),
        ]
    )


def lot(lot_id: str, quantity: str, basis: str, sleeve: str | None) -> LotV1:
    return LotV1(
        lot_id=lot_id,
        quantity=D(quantity),
        acquired=date(2025, 2, 3),
        cost_basis=D(basis),
        sleeve_id=sleeve,
    )


def holdings(account_id: str, uma: bool) -> HoldingsReconciledV2:
    """Sleeve A: 80 CMEQ at $50 and $100 (34% of the account, target 60%); sleeve B: 400
    CMBND at $20 and $50 (66%, target 40%). The SMA holds the same without sleeves."""
    return HoldingsReconciledV2(
        account_id=account_id,
        as_of=date(2026, 11, 30),
        cash=D("150.00"),
        positions=[
            PositionV2(
                symbol=EQUITY,
                quantity=D("80"),
                cost_basis=D("3600"),
                lots=[lot("L1", "80", "3600", "A" if uma else None)],
            ),
            PositionV2(
                symbol=BOND,
                quantity=D("400"),
                cost_basis=D("8400"),
                lots=[lot("L2", "400", "8400", "B" if uma else None)],
            ),
        ],
        cause="opening-balance",
        sleeve_cash=(
            [
                SleeveCashV1(sleeve_id=None, amount=D("0.00")),
                SleeveCashV1(sleeve_id="A", amount=D("100.00")),
                SleeveCashV1(sleeve_id="B", amount=D("50.00")),
            ]
            if uma
            else []
        ),
    )


def model(model_id: str, symbol: str) -> ModelChangedV1:
    return ModelChangedV1(
        model_id=model_id,
        name=model_id,
        version=1,
        changed_by="pm",
        targets=[ModelTargetV1(symbol=symbol, weight=D("1"))],
    )


async def proposals_of(db, *account_ids: str) -> dict[str, dict[str, Any]]:
    async with db.sessions() as s:
        values = (
            await s.execute(select(outbox.c.value).where(outbox.c.topic == "trades-proposed"))
        ).scalars()
    payloads = [json.loads(v)["payload"] for v in values]
    return {p["account_id"]: p for p in payloads if p["account_id"] in account_ids}


async def test_a_umas_proposal_carries_the_cash_its_strategic_rebalance_moves(db):
    await support.deliver(
        db,
        SecuritiesChangedV1(
            securities=[
                SecurityV1(symbol=s, name=s, asset_class=c, sector="X", price=D(p))
                for s, c, p in ((EQUITY, "US Equity", "50"), (BOND, "Fixed Income", "20"))
            ]
        ),
        "security-master",
    )
    await support.deliver(db, model(INCOME, BOND), INCOME)
    for account_id, strategy in (("CM-UMA", uma_strategy()), ("CM-SMA", None)):
        await support.deliver(db, account(account_id, strategy), account_id)
        await support.deliver(db, holdings(account_id, strategy is not None), account_id)
    await support.deliver(db, model(GROWTH, EQUITY), GROWTH)  # the run: both follow it

    proposals = await proposals_of(db, "CM-UMA", "CM-SMA")
    uma = proposals["CM-UMA"]
    trades = {(t["sleeve_id"], t["side"], t["symbol"], t["quantity"]) for t in uma["trades"]}
    assert trades == {("A", "buy", EQUITY, "65"), ("B", "sell", BOND, "157")}
    assert uma["cash_movements"] == [
        {"from_sleeve": "B", "to_sleeve": "A", "amount": "3190.00", "purpose": "rebalance"}
    ]
    # the engine's own movements, as the stored scenario replays
    async with db.sessions() as s:
        stored = await repository.get_scenario(s, uma["run_id"], "CM-UMA", tenant=None)
    replayed = rebalance(scenario_from_dict(stored))
    assert [
        {
            "from_sleeve": m.from_sleeve,
            "to_sleeve": m.to_sleeve,
            "amount": str(m.amount),
            "purpose": m.purpose,
        }
        for m in replayed.cash_movements
    ] == uma["cash_movements"]
    assert proposals["CM-SMA"]["cash_movements"] == []
