"""The drift scan's chunk (`scan.py`) on real PostgreSQL: plain SMAs reach the engine as
arrays, UMAs and restricted SMAs as engine Accounts, only the accounts to skip go through
`preparation.prepare`, and the chunk publishes byte for byte
the drift-detected events and skips the same accounts for the same reasons as the scan did
before (every account through `prepare` and `plan_sleeve`); the chunk's payload writer
equals `engine_input.drift_event_json`."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from ballast_common.contracts.events import (
    AccountChangedV1,
    BandV1,
    DriftDetectedV1,
    EquivalenceSetChangedV1,
    HoldingsReconciledV1,
    ModelChangedV1,
    ModelTargetV1,
    PositionV1,
    RebalanceChunkRequestedV1,
    RebalanceSettingsV1,
    RestrictionV1,
    SecuritiesChangedV1,
    SecurityV1,
    SleeveV1,
    StrategyV1,
)
from ballast_common.testing import migrated_database, unit_of_work
from ballast_common.uow import UnitOfWork
from ballast_engine.drift import book_arrays, scan_drift
from ballast_engine.model import Book
from hypothesis import example, given
from hypothesis import strategies as st
from rebalance_svc import preparation, repository, scan, service
from rebalance_svc.engine_input import DriftVerdict, drift_event_json, scanned_accounts
from rebalance_svc.main import spec
from rebalance_svc.settings import Settings
from rebalance_test_support import deliver

pytestmark = pytest.mark.integration

SETTINGS = Settings()
ACCOUNTS = [
    "SC-P1",  # plain SMA near its model
    "SC-P2",  # plain SMA with its own settings, an equivalent, a security outside the model
    "SC-P3",  # plain SMA holding only cash
    "SC-R",  # restricted SMA
    "SC-U",  # UMA
    "SC-S",  # suspended
    "SC-N",  # no holdings reconciled
    "SC-M",  # its model is not published
    "SC-F",  # trades in flight
    "SC-X",  # holds a security the security master does not know
    "SC-GONE",  # not known to rebalance-svc at all
]


def _account(account_id: str, **fields: Any) -> AccountChangedV1:
    base: dict[str, Any] = {
        "account_id": account_id,
        "household_id": "HH-SC",
        "name": account_id,
        "account_type": "taxable",
        "model_id": "sc-core",
        "status": "active",
        "auto_approve": True,
    }
    return AccountChangedV1(**(base | fields))


def _holdings(account_id: str, cash: str, **shares: str) -> HoldingsReconciledV1:
    return HoldingsReconciledV1(
        account_id=account_id,
        as_of=date(2026, 11, 20),
        cash=Decimal(cash),
        positions=[
            PositionV1(symbol=s, quantity=Decimal(q), cost_basis=Decimal(0))
            for s, q in shares.items()
        ],
        cause="opening-balance",
    )


def _model(model_id: str, **weights: str) -> ModelChangedV1:
    return ModelChangedV1(
        model_id=model_id,
        name=model_id,
        version=1,
        changed_by="pm",
        targets=[ModelTargetV1(symbol=s, weight=Decimal(w)) for s, w in weights.items()],
    )


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    securities = (
        ("SCA", "101.37", "Equity", "IT", True),
        ("SCB", "55.5", "Equity", "IT", False),  # equivalent to SCA
        ("SCD", "20.25", "Bonds", "Fixed", False),
        ("SCE", "310", "Equity", "Energy", False),
        ("SCI", "12.75", "Intl", "Intl", True),
    )
    await deliver(
        database,
        SecuritiesChangedV1(
            securities=[
                SecurityV1(
                    symbol=s,
                    name=s,
                    asset_class=c,
                    sector=sector,
                    price=Decimal(p),
                    fractional_eligible=f,
                )
                for s, p, c, sector, f in securities
            ]
        ),
        "security-master",
    )
    await deliver(
        database,
        EquivalenceSetChangedV1(set_id="sc-eq", name="sc", members=["SCA", "SCB"], version=1),
        "sc-eq",
    )
    await deliver(database, _model("sc-core", SCA="0.55", SCD="0.3", SCE="0.15"), "sc-core")
    await deliver(database, _model("sc-intl", SCI="0.7", SCD="0.3"), "sc-intl")
    await deliver(database, _model("sc-busy", SCD="1"), "sc-busy")
    own = RebalanceSettingsV1(
        cash_target=Decimal("0.05"),
        cash_reserve=Decimal("250"),
        cash_band=BandV1(kind="relative", width=Decimal("0.5")),
        security_band=BandV1(kind="relative", width=Decimal("0.2")),
        fractional=True,
    )
    strategy = StrategyV1(
        sleeves=[
            SleeveV1(
                sleeve_id="c",
                model_id="sc-core",
                weight=Decimal("0.6"),
                band=BandV1(width=Decimal("0.05")),
            ),
            SleeveV1(
                sleeve_id="i",
                model_id="sc-intl",
                weight=Decimal("0.4"),
                band=BandV1(width=Decimal("0.05")),
            ),
        ],
        rebalance_range="target",
    )
    no_energy = RestrictionV1(
        kind="do_not_buy", scope="sector", value="Energy", source="client", reason="r", set_by="a"
    )
    for event in (
        _account("SC-P1"),
        _account("SC-P2", model_id="sc-intl", rebalance_settings=own),
        _account("SC-P3", rebalance_settings=own),
        _account("SC-R", restrictions=[no_energy]),
        _account("SC-U", model_id=None, strategy=strategy),
        _account("SC-S", status="suspended"),
        _account("SC-N"),
        _account("SC-M", model_id="sc-ghost"),
        _account("SC-F", model_id="sc-busy"),
        _account("SC-X"),
        _holdings("SC-P1", "512.30", SCA="54", SCD="150", SCE="5"),
        _holdings("SC-P2", "80.05", SCB="40", SCI="700.125", SCD="150", SCE="3"),
        _holdings("SC-P3", "25000"),
        _holdings("SC-R", "1000", SCA="10", SCE="30"),
        _holdings("SC-U", "2500", SCA="30", SCB="12", SCI="400", SCD="90"),
        _holdings("SC-S", "100", SCA="1"),
        _holdings("SC-M", "100", SCA="1"),
        _holdings("SC-F", "5000", SCD="10"),
        _holdings("SC-X", "100", SCA="3", ZZZ="7"),
    ):
        await deliver(database, event, event.account_id)
    # a model change of sc-busy proposes trades for SC-F: they stay in flight
    await deliver(
        database,
        _model("sc-busy", SCD="0.9", SCI="0.1").model_copy(update={"version": 2}),
        "sc-busy",
    )
    yield database
    await database.dispose()


def _request(ids: list[str]) -> RebalanceChunkRequestedV1:
    return RebalanceChunkRequestedV1(
        run_id=uuid.UUID(int=42),
        chunk=0,
        chunks=1,
        kind="scan",
        trigger="scan",
        model_id="*",
        model_version=0,
        account_ids=ids,
    )


async def _scan_before(uow: UnitOfWork, request, accounts, tally) -> None:  # type: ignore[no-untyped-def]
    """The chunk's scan as it was: every account through `prepare` and `plan_sleeve`."""
    prepared = await preparation.prepare(uow.session, accounts, SETTINGS, [], tax=False)
    tally.skipped.update(prepared.skipped)
    arrays, failures = book_arrays(
        Book(prepared.reference, tuple(prepared.accounts.values())), vectorized=False
    )
    for failure in failures:
        tally.skipped[failure.account_id] = failure.error
    for verdict in scanned_accounts(arrays, scan_drift(arrays)):
        tally.accounts_evaluated += 1
        tally.accounts_out_of_tolerance += int(verdict.out_of_tolerance)
        uow.publish_json(
            DriftDetectedV1,
            drift_event_json(request.run_id, prepared.labels[verdict.account_id], verdict),
            key=verdict.account_id,
            tenant=prepared.rows[verdict.account_id].tenant,
        )


async def _run(db, how, ids: list[str]) -> tuple[service.Tally, dict[str, tuple[bytes, Any]]]:  # type: ignore[no-untyped-def]
    """Run one way of scanning the chunk in a transaction that is rolled back; its tally and
    each event (payload bytes, headers but the event's own id and time) by account."""
    async with unit_of_work(db, "rebalance-svc") as uow:
        accounts = await repository.accounts_by_ids(uow.session, ids)
        tally = service.Tally()
        known = {a.account_id for a in accounts}
        tally.skipped.update({a: "unknown" for a in ids if a not in known})
        await how(uow, _request(ids), accounts, tally)
        events = {}
        for m in uow._pending:
            payload = m.value[m.value.index(b',"payload":') + len(b',"payload":') : -1]
            events[m.key] = (payload, (m.topic, m.headers["event-type"]))
        uow.discard_events()
        await uow.session.rollback()
    return tally, events


async def test_a_chunk_publishes_what_the_scan_published_before(db, monkeypatch):
    prepared_for: list[str] = []
    original = preparation.prepare

    async def recording(session, accounts, settings, extra, *, tax=True):  # type: ignore[no-untyped-def]
        prepared_for.extend(a.account_id for a in accounts)
        return await original(session, accounts, settings, extra, tax=tax)

    async def now(uow, request, accounts, tally):  # type: ignore[no-untyped-def]
        await service._scan_chunk(uow, request, accounts, SETTINGS, tally)

    monkeypatch.setattr(preparation, "prepare", recording)
    after, after_events = await _run(db, now, ACCOUNTS)
    monkeypatch.setattr(preparation, "prepare", original)
    before, before_events = await _run(db, _scan_before, ACCOUNTS)

    assert after_events == before_events
    assert after.skipped == before.skipped
    assert (after.accounts_evaluated, after.accounts_out_of_tolerance) == (
        before.accounts_evaluated,
        before.accounts_out_of_tolerance,
    )
    # what the chunk is made of, so the comparison above covers every way through
    assert set(after_events) == {"SC-P1", "SC-P2", "SC-P3", "SC-R", "SC-U"}
    assert after.skipped["SC-S"] == "account is suspended"
    assert after.skipped["SC-N"] == "no holdings reconciled yet"
    assert after.skipped["SC-M"] == "model sc-ghost not published yet"
    assert "not settled yet" in after.skipped["SC-F"]
    assert "ZZZ" in after.skipped["SC-X"] and "security master" in after.skipped["SC-X"]
    # only the accounts skipped went through prepare: the plain SMAs went as arrays (SC-X too:
    # the engine's own check rejects its holding), the UMA and the restricted SMA as Accounts
    assert sorted(prepared_for) == ["SC-F", "SC-M", "SC-N", "SC-S"]
    p2 = DriftDetectedV1.model_validate_json(after_events["SC-P2"][0])
    assert {s.symbol for s in p2.securities} == {"SCI", "SCD", "SCB", "SCE"}
    assert p2.model_id == "sc-intl" and p2.out_of_tolerance


async def test_the_chunk_returns_the_accounts_out_of_tolerance(db):
    async with unit_of_work(db, "rebalance-svc") as uow:
        accounts = await repository.accounts_by_ids(uow.session, ACCOUNTS)
        tally = service.Tally()
        out = await scan.scan_chunk(uow, uuid.UUID(int=1), accounts, tally, SETTINGS)
        published = {
            m.key: DriftDetectedV1.model_validate_json(
                m.value[m.value.index(b',"payload":') + len(b',"payload":') : -1]
            )
            for m in uow._pending
        }
        out_ids = sorted(a.account_id for a in out)
        uow.discard_events()
        await uow.session.rollback()
    assert out_ids == sorted(k for k, d in published.items() if d.out_of_tolerance)
    assert tally.accounts_evaluated == len(published) == 5


WEIGHTS = st.one_of(
    st.floats(min_value=-1e-6, max_value=2.0, allow_nan=False),
    st.integers(0, 2_000_000).map(lambda k: k / 1e6 + 5e-7),  # near a half millionth
    st.integers(0, 2_000_000).map(lambda k: (k + 0.5) / 1e6),
    st.sampled_from([0.0, -0.0, 1e-300, 5e-7, 1.5e-6, 2.5e-6, 0.0000005, 1e9, 4.4e12]),
)


@given(st.lists(WEIGHTS, max_size=50))
@example([0.1234565, 0.0000025, 2.5e-7, 0.5e-6, 1.0, 1 - 1e-17])
def test_micro_units_are_the_weights_as_written(weights: list[float]) -> None:
    written = [int(f"{max(w, 0.0) + 0.0:.6f}".replace(".", "")) for w in weights]
    assert scan.micro_units(np.array(weights, dtype=np.float64)).tolist() == written


@given(
    st.lists(
        st.lists(st.tuples(st.text(min_size=1, max_size=6), WEIGHTS, WEIGHTS), max_size=8),
        max_size=6,
    ),
    st.text(min_size=1, max_size=8),
)
@example([[("SCA", 0.25, -0.0), ('"q"\\', 1e-7, 0.9999995)], []], "\u00e9t\u00e9")
def test_the_chunks_payloads_are_drift_event_json(accounts, model_id) -> None:  # type: ignore[no-untyped-def]
    verdicts = [
        DriftVerdict(
            f"A{i}\u00e9" if i % 2 else f"A{i}",
            bool(i % 2),
            ("security",) if i % 2 else (),
            Decimal("0.012345"),
            Decimal("0.005000"),
            Decimal("-12.30") if i % 3 == 0 else Decimal("98765.43"),
            [p[0] for p in positions],
            [p[1] for p in positions],
            [p[2] for p in positions],
        )
        for i, positions in enumerate(accounts)
    ]
    labels = {v.account_id: (model_id, 7) for v in verdicts}
    run_id = uuid.UUID(int=3)
    assert scan.drift_payloads(run_id, labels, verdicts) == [
        drift_event_json(run_id, labels[v.account_id], v) for v in verdicts
    ]
