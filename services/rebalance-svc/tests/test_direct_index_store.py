"""On real PostgreSQL: a direct-index model-changed is kept in the models read model, and its
run proposes the account's trades through the optimizer: the excluded name sold, tracking
errors in the metrics, the optimizer's explanation in the notes; a later version that is no
direct index goes back to the rules (no tracking error)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from ballast_common.contracts.events import (
    AccountChangedV1,
    DirectIndexV1,
    HoldingsReconciledV2,
    LotV1,
    ModelChangedV1,
    ModelTargetV1,
    OptimizerSettingsV1,
    PositionV2,
    RestrictionV1,
    RiskModelV1,
    SecuritiesChangedV1,
    SecurityV1,
)
from ballast_common.outbox import outbox
from ballast_common.testing import migrated_database
from rebalance_svc import repository
from rebalance_svc.main import spec
from rebalance_test_support import deliver
from sqlalchemy import select

pytestmark = pytest.mark.integration

ACCOUNT = "DIS-1"
MODEL = "dis-index"
NAMES = ["DSA", "DSB", "DSC", "DSD", "DSE", "DSF"]


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    securities = [
        SecurityV1(
            symbol=s,
            name=s,
            asset_class="US Equity",
            sector="Tech" if i < 3 else "Energy",
            price=Decimal("40"),
        )
        for i, s in enumerate(NAMES)
    ]
    await deliver(database, SecuritiesChangedV1(securities=securities), "security-master")
    account = AccountChangedV1(
        account_id=ACCOUNT,
        household_id="HH-DIS",
        name=ACCOUNT,
        account_type="taxable",
        model_id=MODEL,
        status="active",
        auto_approve=True,
        restrictions=[
            RestrictionV1(
                kind="do_not_hold",
                scope="security",
                value="DSB",
                source="client",
                reason="client excludes DSB",
                set_by="advisor",
            )
        ],
    )
    await deliver(database, account, ACCOUNT)
    positions = [
        PositionV2(
            symbol=s,
            quantity=Decimal(40),
            cost_basis=Decimal(1200),
            lots=[
                LotV1(
                    lot_id=f"{s}-1",
                    quantity=Decimal(40),
                    acquired=date(2024, 3, 1),
                    cost_basis=Decimal(1200),
                )
            ],
        )
        for s in NAMES
    ]
    book = HoldingsReconciledV2(
        account_id=ACCOUNT,
        household_id="HH-DIS",
        as_of=date(2026, 12, 7),
        cash=Decimal("400"),
        positions=positions,
        cause="opening-balance",
    )
    await deliver(database, book, ACCOUNT)
    yield database
    await database.dispose()


async def proposals_of(db, account_id: str) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        rows = await s.execute(
            select(outbox.c.value)
            .where(outbox.c.topic == "trades-proposed", outbox.c.key == account_id)
            .order_by(outbox.c.id)
        )
    return [json.loads(r[0])["payload"] for r in rows]


def index_event(version: int, direct: bool = True) -> ModelChangedV1:
    weights = ["0.25", "0.10", "0.15", "0.20", "0.20", "0.10"]
    return ModelChangedV1(
        model_id=MODEL,
        name="Direct",
        version=version,
        changed_by="pm",
        targets=[
            ModelTargetV1(
                symbol=s,
                weight=Decimal(w),
                factor_exposures={"market": Decimal("1.2" if i < 3 else "0.8")} if direct else {},
            )
            for i, (s, w) in enumerate(zip(NAMES, weights, strict=True))
        ],
        direct_index=DirectIndexV1(
            risk_model=RiskModelV1(factors=["market"], covariance=[[Decimal("0.0256")]]),
            settings=OptimizerSettingsV1(harvesting=False),
        )
        if direct
        else None,
    )


async def test_a_direct_index_is_kept_and_its_accounts_go_through_the_optimizer(db):
    await deliver(db, index_event(1), MODEL)
    async with db.sessions() as s:
        model = await repository.get_model(s, MODEL)
    assert model is not None and model.direct_index is not None
    assert model.direct_index["exposures"]["DSA"] == {"market": "1.2"}
    assert model.direct_index["settings"]["harvesting"] is False
    assert model.target_settings == {}

    [proposal] = await proposals_of(db, ACCOUNT)
    trades = {(t["symbol"], t["side"]): t for t in proposal["trades"]}
    excluded = trades[("DSB", "sell")]
    assert (excluded["quantity"], excluded["reason"], excluded["lot_ids"]) == (
        "40",
        "restriction",
        ["DSB-1"],
    )
    assert Decimal(excluded["estimated_tax"]) == Decimal("80.00")  # $400 long-term gain at 20%
    assert all(t["explanation"] for t in proposal["trades"])
    metrics = proposal["metrics"]
    before = Decimal(metrics["tracking_error_before_percent"])
    after = Decimal(metrics["tracking_error_after_percent"])
    assert after < before
    assert proposal["notes"] and "tracking error" in proposal["notes"][-1]

    # the manager turns the index back into a plain model: the rules propose, no tracking error
    await deliver(db, index_event(2, direct=False), MODEL)
    async with db.sessions() as s:
        model = await repository.get_model(s, MODEL)
    assert model is not None and model.direct_index is None
    last = (await proposals_of(db, ACCOUNT))[-1]
    assert last["model_version"] == 2
    assert last["metrics"]["tracking_error_after_percent"] is None
