"""A UMA's positions are split into sleeves by one rule (`ballast_engine.sleeves`) whether
the account is proposed trades (its lots read) or scanned for drift (only the shares its
lots put in each sleeve read): on real PostgreSQL, a position whose lots are all in the
second sleeve, though the first sleeve's model holds the symbol too, is in the second
sleeve both ways, and the scan publishes the drift the proposal's preparation computes."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import pytest
from ballast_common.contracts.events import (
    AccountChangedV1,
    BandV1,
    DriftDetectedV1,
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
from ballast_common.testing import migrated_database, unit_of_work
from ballast_engine.drift import book_arrays, scan_drift
from ballast_engine.model import Account, Book, DriftLevel, RebalanceInput
from ballast_engine.rebalance import rebalance
from rebalance_svc import preparation, repository, scan, service
from rebalance_svc.engine_input import drift_event_json, scanned_accounts, strategy_for
from rebalance_svc.main import spec
from rebalance_svc.settings import Settings
from rebalance_test_support import deliver

pytestmark = pytest.mark.integration

D = Decimal
SETTINGS = Settings()
UMA = "SLV-U"
RUN = uuid.UUID(int=7)


def _lot(lot_id: str, quantity: str, basis: str, sleeve_id: str | None) -> LotV1:
    return LotV1(
        lot_id=lot_id,
        quantity=D(quantity),
        acquired=date(2025, 2, 3),
        cost_basis=D(basis),
        sleeve_id=sleeve_id,
    )


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    await deliver(
        database,
        SecuritiesChangedV1(
            securities=[
                SecurityV1(symbol=s, name=s, asset_class=c, sector=c, price=D(p))
                for s, c, p in (
                    ("SLA", "Equity", "100"),
                    ("SLB", "Equity", "50"),
                    ("SLD", "Bonds", "20"),
                )
            ]
        ),
        "security-master",
    )
    for model_id, targets in (("sl-core", {"SLA": "0.5", "SLD": "0.5"}), ("sl-bond", {"SLD": "1"})):
        await deliver(
            database,
            ModelChangedV1(
                model_id=model_id,
                name=model_id,
                version=1,
                changed_by="pm",
                targets=[ModelTargetV1(symbol=s, weight=D(w)) for s, w in targets.items()],
            ),
            model_id,
        )
    band = BandV1(kind="absolute", width=D("0.05"))
    await deliver(
        database,
        AccountChangedV1(
            account_id=UMA,
            household_id="HH-SLV",
            name=UMA,
            account_type="taxable",
            model_id=None,
            status="active",
            auto_approve=True,
            strategy=StrategyV1(
                sleeves=[
                    SleeveV1(sleeve_id="c", model_id="sl-core", weight=D("0.5"), band=band),
                    SleeveV1(sleeve_id="b", model_id="sl-bond", weight=D("0.5"), band=band),
                ],
                rebalance_range="target",
            ),
        ),
        UMA,
    )
    positions = [
        PositionV2(
            symbol="SLA", quantity=D(10), cost_basis=D(900), lots=[_lot("A", "10", "900", "c")]
        ),
        # the core model holds SLD too (its home sleeve), but every lot of it is the bond sleeve's
        PositionV2(
            symbol="SLD",
            quantity=D(100),
            cost_basis=D(1900),
            lots=[_lot("D1", "30", "570", "b"), _lot("D2", "70", "1330", "b")],
        ),
        PositionV2(
            symbol="SLB", quantity=D(4), cost_basis=D(180), lots=[_lot("B", "4", "180", None)]
        ),
    ]
    await deliver(
        database,
        HoldingsReconciledV2(
            account_id=UMA,
            as_of=date(2026, 11, 20),
            cash=D(500),
            positions=positions,
            cause="opening-balance",
            sleeve_cash=[
                SleeveCashV1(sleeve_id="c", amount=D(250)),
                SleeveCashV1(sleeve_id="b", amount=D(250)),
            ],
        ),
        UMA,
    )
    yield database
    await database.dispose()


def _by_sleeve(account: Account) -> dict[str, list[tuple[str, float]]]:
    return {s.sleeve_id: [(h.symbol, h.quantity) for h in s.holdings] for s in account.sleeves}


def _sleeve_drift(account: Account, book: Book) -> list[tuple[str, float, float]]:
    report = rebalance(RebalanceInput(account, book.reference)).drift_before
    return [(i.key, i.weight, i.target) for i in report.items if i.level is DriftLevel.SLEEVE]


async def test_a_scan_splits_a_uma_as_a_proposal_does(db):
    async with unit_of_work(db, "rebalance-svc") as uow:
        session = uow.session
        accounts = await repository.accounts_by_ids(session, [UMA])
        # as a proposal: the lots read
        proposal = await preparation.prepare(session, accounts, SETTINGS, [])
        # as the scan lays out a ready UMA, and what the scan publishes
        chunk = await scan._read_chunk(session, accounts)
        shared = await preparation.engine_reference(
            session, chunk.models, [strategy_for(chunk.rows[UMA])]
        )
        [scanned] = await scan._engine_accounts(
            session, chunk.ready, chunk.rows, preparation.defaults_of(SETTINGS), shared
        )
        await scan.scan_chunk(uow, RUN, accounts, service.Tally(), SETTINGS)
        [message] = uow._pending
        published = message.value[message.value.index(b',"payload":') + len(b',"payload":') : -1]
        uow.discard_events()
        await session.rollback()

    proposed = proposal.accounts[UMA]
    assert any(lot.lot_id == "D1" for s in proposed.sleeves for h in s.holdings for lot in h.lots)
    assert (
        _by_sleeve(scanned)
        == _by_sleeve(proposed)
        == {
            "c": [("SLA", 10.0), ("SLB", 4.0)],  # SLB: no lot names a sleeve, no model holds it
            "b": [("SLD", 100.0)],
        }
    )
    book = Book(proposal.reference, (proposed,))
    assert _sleeve_drift(scanned, book) == _sleeve_drift(proposed, book)
    # the scan publishes what the proposal's account measures
    arrays, failures = book_arrays(book)
    assert not failures
    [verdict] = scanned_accounts(arrays, scan_drift(arrays))
    assert published == drift_event_json(RUN, proposal.labels[UMA], verdict)
    event = DriftDetectedV1.model_validate_json(published)
    sld = [(s.target_weight, s.current_weight) for s in event.securities if s.symbol == "SLD"]
    # a slot in each sleeve's model: none held in the core sleeve, $2,000 of the bond sleeve's
    # $2,250 (split by the home rule alone, the core sleeve would hold it at 2000/3450)
    assert sld == [(D("0.500000"), D("0")), (D("1.000000"), D("0.888889"))]
