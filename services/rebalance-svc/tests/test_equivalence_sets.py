"""Equivalence sets in rebalance-svc on real PostgreSQL: equivalence-set-changed fills the read
model (newest version wins, a removal sticks), and the live sets reach the engine, so an
account holding one member of a set is not sold to buy another member its model targets.
Symbols are this module's own (the read model's sets are shared by every account)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from ballast_common.contracts.events import (
    AccountChangedV1,
    EquivalenceSetChangedV1,
    HoldingsReconciledV1,
    ModelChangedV1,
    ModelTargetV1,
    PositionV1,
    SecuritiesChangedV1,
    SecurityV1,
)
from ballast_common.outbox import outbox
from ballast_common.testing import migrated_database
from ballast_engine.rebalance import rebalance
from ballast_engine.scenario import scenario_from_dict
from rebalance_svc import repository, service
from rebalance_svc.main import spec
from rebalance_test_support import deliver
from sqlalchemy import select

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


def eq_set(set_id: str, version: int, *members: str, removed: bool = False) -> Any:
    return EquivalenceSetChangedV1(
        set_id=set_id, name=set_id, members=list(members), removed=removed, version=version
    )


def model(version: int, **weights: str) -> ModelChangedV1:
    return ModelChangedV1(
        model_id="eq-core",
        name="Equivalence core",
        version=version,
        changed_by="pm",
        targets=[ModelTargetV1(symbol=s, weight=Decimal(w)) for s, w in weights.items()],
    )


async def proposals(db, account_id: str, model_version: int) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        rows = await s.execute(
            select(outbox.c.value).where(outbox.c.topic == "trades-proposed").order_by(outbox.c.id)
        )
    payloads = [json.loads(r[0])["payload"] for r in rows]
    return [
        p
        for p in payloads
        if p["account_id"] == account_id
        and p["model_id"] == "eq-core"
        and p["model_version"] == model_version
    ]


def trades(proposal: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    assert len(proposal) <= 1
    return {(t["symbol"], t["side"], t["quantity"]) for p in proposal for t in p["trades"]}


@pytest.fixture(scope="module")
async def book(db):
    """EQ-1 holds EQB (an equivalent of EQA) and the bond; its model targets EQA."""
    await deliver(
        db,
        SecuritiesChangedV1(
            securities=[
                SecurityV1(symbol=s, name=s, asset_class=c, sector="Index", price=Decimal(p))
                for s, c, p in (
                    ("EQA", "US Equity", "100"),
                    ("EQB", "US Equity", "100"),
                    ("EQC", "US Equity", "50"),
                    ("EQBND", "US Bond", "50"),
                )
            ]
        ),
        "security-master",
    )
    await deliver(
        db,
        AccountChangedV1(
            account_id="EQ-1",
            household_id="HH-EQ",
            name="EQ-1",
            account_type="taxable",
            model_id="eq-core",
            status="active",
            auto_approve=True,
        ),
        "EQ-1",
    )
    await deliver(
        db,
        HoldingsReconciledV1(
            account_id="EQ-1",
            as_of=date(2026, 11, 20),
            cash=Decimal("0"),
            cause="opening-balance",
            positions=[
                PositionV1(symbol="EQB", quantity=Decimal(60), cost_basis=Decimal(5400)),
                PositionV1(symbol="EQBND", quantity=Decimal(80), cost_basis=Decimal(4000)),
            ],
        ),
        "EQ-1",
    )


async def test_an_equivalent_holding_is_not_sold_to_buy_its_twin(db, book):
    # without a set, EQB is not in the model: it is sold to buy EQA (the control)
    await deliver(db, model(1, EQA="0.6", EQBND="0.4"), "eq-core")
    assert trades(await proposals(db, "EQ-1", 1)) == {("EQB", "sell", "60"), ("EQA", "buy", "60")}

    # EQA and EQB become equivalent; ZZEQ is unknown to the security master: it is left out
    # (and logged), the rest of the set still counts and the book still rebalances
    await deliver(db, eq_set("eq-sp", 1, "EQA", "EQB", "ZZEQ"), "eq-sp", T0)
    await deliver(db, model(2, EQA="0.6", EQBND="0.4"), "eq-core")
    assert await proposals(db, "EQ-1", 2) == []  # already on target through EQB

    async with db.sessions() as s:
        [listed] = await repository.list_runs(s, "eq-core", 2, 5, tenant=None)
        run = await service.run_with_skipped(s, listed.run_id, tenant=None)
        stored = await repository.get_scenario(s, run.run_id, "EQ-1", tenant=None)
    assert "EQ-1" not in run.skipped and run.accounts_evaluated == 1
    scenario = scenario_from_dict(stored)
    assert [(e.set_id, e.members) for e in scenario.reference.equivalence_sets] == [
        ("eq-sp", ("EQA", "EQB"))
    ]
    assert rebalance(scenario).trades == ()  # the replay agrees

    # the model moves weight to the equity side: more of the set is bought, EQB is kept
    await deliver(db, model(3, EQA="0.7", EQBND="0.3"), "eq-core")
    # ($7,000 of the set wanted, $6,000 held in EQB: the model's own member tops it up)
    assert trades(await proposals(db, "EQ-1", 3)) == {("EQA", "buy", "10"), ("EQBND", "sell", "20")}

    # the set is removed: EQB is no longer a substitute and is sold again
    await deliver(db, eq_set("eq-sp", 2, removed=True), "eq-sp", T0 + timedelta(minutes=1))
    await deliver(db, model(4, EQA="0.6", EQBND="0.4"), "eq-core")
    assert ("EQB", "sell", "60") in trades(await proposals(db, "EQ-1", 4))


async def test_newest_version_wins_and_a_late_older_one_changes_nothing(db):
    await deliver(db, eq_set("eq-late", 3, "EQA", "EQC"), "eq-late", T0)
    await deliver(db, eq_set("eq-late", 2, "EQB", "EQC"), "eq-late", T0 + timedelta(hours=1))
    async with db.sessions() as s:
        row = await repository.get_equivalence_set(s, "eq-late")
    assert (row.version, row.members, row.removed) == (3, ["EQA", "EQC"], False)

    await deliver(db, eq_set("eq-late", 4, removed=True), "eq-late", T0 + timedelta(hours=2))
    await deliver(db, eq_set("eq-late", 3, "EQA", "EQC"), "eq-late", T0 + timedelta(hours=3))
    async with db.sessions() as s:
        row = await repository.get_equivalence_set(s, "eq-late")
        live = {e.set_id for e in await repository.live_equivalence_sets(s)}
    assert (row.version, row.members, row.removed) == (4, [], True)
    assert "eq-late" not in live
