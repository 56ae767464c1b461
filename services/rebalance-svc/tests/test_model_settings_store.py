"""On real PostgreSQL: model-changed's manager settings are kept in the models read model,
reach the engine in a model-change run (a share-based model, tax-loss proxies as a set of
the run's reference) and every proposal carries its metrics; an event without them (as
published before they existed) is a plain weight model."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from ballast_common.contracts.events import (
    AccountChangedV1,
    BandV1,
    HoldingsReconciledV2,
    ModelChangedV1,
    ModelParentV1,
    ModelTargetV1,
    PositionV2,
    SecuritiesChangedV1,
    SecurityV1,
)
from ballast_common.outbox import outbox
from ballast_common.testing import migrated_database
from ballast_engine.scenario import scenario_from_dict
from rebalance_svc import preparation, repository
from rebalance_svc.main import spec
from rebalance_test_support import deliver
from sqlalchemy import select

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    prices = (("MSA", "100"), ("MSB", "50"), ("MSP", "25"))
    securities = [
        SecurityV1(symbol=s, name=s, asset_class="US Equity", sector="IT", price=Decimal(p))
        for s, p in prices
    ]
    await deliver(database, SecuritiesChangedV1(securities=securities), "security-master")
    account = AccountChangedV1(
        account_id="MS-1",
        household_id="HH-MS",
        name="MS-1",
        account_type="taxable",
        model_id="ms-static",
        status="active",
        auto_approve=True,
    )
    await deliver(database, account, "MS-1")
    book = HoldingsReconciledV2(
        account_id="MS-1",
        as_of=date(2026, 12, 7),
        cash=Decimal("10000"),
        positions=[PositionV2(symbol="MSA", quantity=Decimal("1"), cost_basis=Decimal("100"))],
        cause="opening-balance",
    )
    await deliver(database, book, "MS-1")
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


async def test_a_share_model_with_proxies_is_kept_and_rebalanced_with_metrics(db):
    event = ModelChangedV1(
        model_id="ms-static",
        name="Static",
        version=1,
        changed_by="pm",
        kind="shares",
        swap_back=True,
        parent=ModelParentV1(model_id="ms-parent", version=2),
        targets=[
            ModelTargetV1(
                symbol="MSA",
                weight=Decimal("0.9"),
                shares=Decimal("10"),
                band=BandV1(kind="relative", width=Decimal("0.1")),
                tax_loss_proxies=["MSP"],
            ),
            ModelTargetV1(symbol="MSB", weight=Decimal("0.1"), shares=Decimal("20")),
        ],
    )
    await deliver(db, event, "ms-static")

    async with db.sessions() as s:
        model = await repository.get_model(s, "ms-static")
    assert model is not None
    assert (model.kind, model.swap_back, model.parent) == (
        "shares",
        True,
        {"model_id": "ms-parent", "version": 2},
    )
    assert model.target_settings == {
        "MSA": {
            "shares": "10",
            "band": {"kind": "relative", "width": "0.1"},
            "tax_loss_proxies": ["MSP"],
        },
        "MSB": {"shares": "20"},
    }
    assert preparation.model_spec(model).swap_back is True

    [proposal] = await proposals_of(db, "MS-1")
    # $10,100: the shares imply 50/50 ($1,000 each), not the 90/10 the weights say
    assert [(t["symbol"], t["side"], t["quantity"]) for t in proposal["trades"]] == [
        ("MSA", "buy", "49"),
        ("MSB", "buy", "101"),
    ]
    # before: MSA at 1% and MSB at 0% of 50%; after: MSA $5,000 (49.505%), MSB $5,050 (50%)
    # turnover 9,950 / 20,200 = 49.2574%
    assert proposal["metrics"] == {
        "account_value": "10100.00",
        "buy_value": "9950.00",
        "sell_value": "0.00",
        "turnover_percent": "49.2574",
        "estimated_tax": "0.00",
        "drift_before_percent": "50.0000",
        "drift_after_percent": "0.4950",
        "tracking_error_before_percent": None,
        "tracking_error_after_percent": None,
    }
    async with db.sessions() as s:
        stored = await repository.get_scenario(s, proposal["run_id"], "MS-1", tenant=None)
    scenario = scenario_from_dict(stored)
    [entry_a, _] = scenario.reference.models["ms-static"].entries
    assert scenario.reference.models["ms-static"].kind == "shares" and entry_a.shares == 10
    assert [(e.set_id, e.members) for e in scenario.reference.equivalence_sets] == [
        ("proxies:ms-static:MSA", ("MSA", "MSP"))
    ]


async def test_an_event_without_the_settings_is_a_plain_weight_model(db):
    # as model-hub-svc published it before the settings existed (the contract's old example)
    old = ModelChangedV1.model_validate(
        {
            "model_id": "ms-static",
            "name": "Static",
            "version": 2,
            "changed_by": "pm",
            "targets": [{"symbol": "MSA", "weight": "0.5"}, {"symbol": "MSB", "weight": "0.5"}],
        }
    )
    await deliver(db, old, "ms-static")
    async with db.sessions() as s:
        model = await repository.get_model(s, "ms-static")
    assert model is not None and model.version == 2
    assert (model.kind, model.target_settings, model.swap_back, model.parent) == (
        "weights",
        {},
        False,
        None,
    )
    proposals = await proposals_of(db, "MS-1")
    assert proposals[-1]["model_version"] == 2 and proposals[-1]["metrics"] is not None
