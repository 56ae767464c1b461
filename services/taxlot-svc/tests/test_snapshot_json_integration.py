"""holdings-reconciled is written with its positions spliced in as the database wrote them
(`snapshots.Snapshot.payload_json`): the very bytes the model writes with every position and
lot as an object (real PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal

import pytest
from ballast_common.contracts.events import AccountChangedV1, HoldingsReconciledV2
from ballast_common.db import Database
from ballast_common.testing import unit_of_work
from taxlot_svc import service, snapshots, taxes
from taxlot_svc.schemas import AccountHoldingsIn

pytestmark = pytest.mark.integration

SOURCE = "taxlot-svc"


async def open_uma(db: Database, account: str) -> None:
    """A UMA whose positions span two sleeves, with odd quantities and basis in cents."""
    changed = AccountChangedV1(
        account_id=account,
        household_id=f"H-{account}",
        name=account,
        account_type="taxable",
        model_id=None,
        status="active",
        auto_approve=True,
    )
    async with unit_of_work(db, SOURCE) as uow:
        await taxes.account_changed(uow, changed)
    body = AccountHoldingsIn.model_validate(
        {
            "account_id": account,
            "as_of": "2026-01-30",
            "cash": "1000.10",
            "sleeve_cash": [{"sleeve_id": "core", "amount": "400.05"}],
            "positions": [
                {
                    "symbol": "ZZB",
                    "lots": [
                        {
                            "quantity": "3.125",
                            "cost_basis": "31.26",
                            "acquired_on": "2024-05-01",
                            "sleeve_id": "core",
                        },
                        {
                            "quantity": "10",
                            "cost_basis": "0.01",
                            "acquired_on": "2025-12-01",
                            "sleeve_id": "income",
                        },
                    ],
                },
                {
                    "symbol": "AAA.B",
                    "lots": [
                        {
                            "quantity": "7",
                            "cost_basis": "1234.50",
                            "acquired_on": "2025-01-02",
                            "sleeve_id": "income",
                        }
                    ],
                },
            ],
        }
    )
    async with unit_of_work(db, SOURCE) as uow:
        await service.open_accounts(uow, "acme", [body], today=date(2026, 12, 6))


async def test_spliced_snapshots_are_the_models_bytes(taxlot_db: Database) -> None:
    account = f"SJ{uuid.uuid4().hex[:8]}"
    await open_uma(taxlot_db, account)
    async with taxlot_db.sessions() as session:
        [snapshot] = await snapshots.build(session, [(account, "fills", ["F-1"], None)])
    assert snapshot.positions_json is not None
    whole = snapshot.event.model_copy(
        update={"positions": snapshots.POSITIONS.validate_json(snapshot.positions_json)}
    )
    written = snapshot.payload_json()
    assert written == whole.model_dump_json().encode()
    event = HoldingsReconciledV2.model_validate_json(written)
    assert [(p.symbol, p.quantity, len(p.lots)) for p in event.positions] == [
        ("AAA.B", Decimal("7"), 1),
        ("ZZB", Decimal("13.125"), 2),
    ]
    assert {c.sleeve_id: c.amount for c in event.sleeve_cash} == {
        None: Decimal("600.05"),
        "core": Decimal("400.05"),
    }


async def test_an_account_without_lots_is_written_with_no_positions(taxlot_db: Database) -> None:
    account = f"SN{uuid.uuid4().hex[:8]}"
    body = AccountHoldingsIn.model_validate(
        {"account_id": account, "as_of": "2026-01-30", "cash": "5.00", "positions": []}
    )
    async with unit_of_work(taxlot_db, SOURCE) as uow:
        await service.open_accounts(uow, "acme", [body], today=date(2026, 12, 6))
    async with taxlot_db.sessions() as session:
        [snapshot] = await snapshots.build(session, [(account, "fills", [], None)])
    payload = json.loads(snapshot.payload_json())
    assert payload["positions"] == [] and payload["cash"] == "5.00"


async def test_an_sma_lot_is_written_in_no_sleeve(taxlot_db: Database) -> None:
    account = f"SS{uuid.uuid4().hex[:8]}"
    body = AccountHoldingsIn.model_validate(
        {
            "account_id": account,
            "as_of": "2026-01-30",
            "cash": "0",
            "positions": [
                {
                    "symbol": "Q",
                    "quantity": "0.5",
                    "cost_basis": "12.35",
                    "acquired_on": "2026-01-29",
                }
            ],
        }
    )
    async with unit_of_work(taxlot_db, SOURCE) as uow:
        await service.open_accounts(uow, "acme", [body], today=date(2026, 12, 6))
    async with taxlot_db.sessions() as session:
        [snapshot] = await snapshots.build(session, [(account, "fills", [], None)])
    assert snapshot.positions_json is not None
    whole = snapshot.event.model_copy(
        update={"positions": snapshots.POSITIONS.validate_json(snapshot.positions_json)}
    )
    assert snapshot.payload_json() == whole.model_dump_json().encode()
    [lot] = json.loads(snapshot.payload_json())["positions"][0]["lots"]
    assert lot["sleeve_id"] is None and lot["acquired"] == "2026-01-29"
