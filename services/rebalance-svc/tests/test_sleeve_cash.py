"""A UMA's cash per sleeve: the book of record keeps each sleeve's cash and says so in
holdings-reconciled (`sleeve_cash`); rebalance-svc keeps it in its read model and gives the
engine each sleeve's own cash (the account's own as unallocated cash), and, for an event
without it, the whole cash as unallocated (as before)."""

from datetime import date
from decimal import Decimal

import pytest
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
from ballast_common.testing import deliver, migrated_database
from rebalance_svc import preparation, repository
from rebalance_svc.engine_input import (
    AccountRow,
    Defaults,
    PositionRow,
    SleeveRow,
    engine_account,
    uma_cash,
)
from rebalance_svc.handlers import subscriptions
from rebalance_svc.main import spec
from rebalance_svc.settings import Settings

D = Decimal
DEFAULTS = Defaults(D("25"), D("0.005"), D("0.02"))
MODELS = {"growth": {"EQ1": D("1")}, "income": {"BND": D("1")}}
SLEEVES = (
    SleeveRow("g", "growth", D("0.6"), "absolute", D("0.05")),
    SleeveRow("i", "income", D("0.4"), "absolute", D("0.05")),
)
UMA = AccountRow("U-1", None, sleeves=SLEEVES, rebalance_range="target")
PARTS = [
    {"sleeve_id": None, "amount": "100.00"},
    {"sleeve_id": "g", "amount": "700.00"},
    {"sleeve_id": "i", "amount": "-200.25"},
    {"sleeve_id": "gone", "amount": "50.00"},  # a sleeve the strategy no longer has
]


def test_each_sleeve_gets_its_own_cash_and_the_rest_is_unallocated():
    own, unallocated = uma_cash(SLEEVES, D("649.75"), PARTS)
    assert own == {"g": D("700.00"), "i": D("-200.25")}
    assert unallocated == D("150.00")  # the account's own 100.00 and the gone sleeve's 50.00
    positions = [PositionRow("EQ1", D("3")), PositionRow("BND", D("4"))]
    account = engine_account(UMA, D("649.75"), positions, DEFAULTS, MODELS, sleeve_cash=PARTS)
    assert [(s.sleeve_id, s.cash) for s in account.sleeves] == [("g", 700.0), ("i", -200.25)]
    assert account.cash == 150.0


def test_without_cash_per_sleeve_the_whole_cash_is_unallocated():
    assert uma_cash(SLEEVES, D("649.75"), None) == ({}, D("649.75"))
    account = engine_account(UMA, D("649.75"), [], DEFAULTS, MODELS)
    assert [s.cash for s in account.sleeves] == [0.0, 0.0]
    assert account.cash == 649.75


def test_an_sma_keeps_its_cash_whole():
    sma = AccountRow("S-1", "growth")
    account = engine_account(sma, D("649.75"), [], DEFAULTS, MODELS, sleeve_cash=PARTS)
    assert [s.cash for s in account.sleeves] == [649.75]


# --- through the read model -------------------------------------------------------------------


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


def uma(account_id: str) -> AccountChangedV1:
    band = BandV1(kind="absolute", width=D("0.05"))
    return AccountChangedV1(
        account_id=account_id,
        household_id=f"HH-{account_id}",
        name=account_id,
        account_type="taxable",
        model_id=None,
        status="active",
        auto_approve=True,
        strategy=StrategyV1(
            sleeves=[
                SleeveV1(sleeve_id="g", model_id="sc-growth", weight=D("0.6"), band=band),
                SleeveV1(sleeve_id="i", model_id="sc-income", weight=D("0.4"), band=band),
            ]
        ),
    )


def holdings(account_id: str, sleeve_cash: list[SleeveCashV1]) -> HoldingsReconciledV2:
    lot = LotV1(lot_id="L1", quantity=D("3"), acquired=date(2025, 1, 2), cost_basis=D("300"))
    return HoldingsReconciledV2(
        account_id=account_id,
        as_of=date(2026, 11, 30),
        cash=D("649.75"),
        positions=[
            PositionV2(
                symbol="SCEQ",
                quantity=D("3"),
                cost_basis=D("300"),
                lots=[lot.model_copy(update={"sleeve_id": "g"})],
            )
        ],
        cause="fills",
        sleeve_cash=sleeve_cash,
    )


@pytest.mark.integration
async def test_the_engine_gets_each_sleeves_cash_as_the_book_of_record_sent_it(db):
    subscriptions_ = subscriptions(Settings())
    await deliver(
        db,
        subscriptions_,
        SecuritiesChangedV1(
            securities=[
                SecurityV1(symbol=s, name=s, asset_class=c, sector="X", price=D("100"))
                for s, c in (("SCEQ", "US Equity"), ("SCBND", "Fixed Income"))
            ]
        ),
    )
    for model_id, symbol in (("sc-growth", "SCEQ"), ("sc-income", "SCBND")):
        await deliver(
            db,
            subscriptions_,
            ModelChangedV1(
                model_id=model_id,
                name=model_id,
                version=1,
                changed_by="pm",
                targets=[ModelTargetV1(symbol=symbol, weight=D("1"))],
            ),
        )
    parts = [SleeveCashV1.model_validate(p) for p in PARTS]
    await deliver(
        db,
        subscriptions_,
        uma("SC-1"),
        uma("SC-2"),
        holdings("SC-1", parts),
        holdings("SC-2", []),  # a book that keeps the cash whole: the old rule
    )
    async with db.sessions() as session:
        accounts = await repository.accounts_by_ids(session, ["SC-1", "SC-2"])
        prepared = await preparation.prepare(session, accounts, Settings(), [])
    assert prepared.skipped == {}
    split = prepared.accounts["SC-1"]
    assert [(s.sleeve_id, s.cash) for s in split.sleeves] == [("g", 700.0), ("i", -200.25)]
    assert split.cash == 150.0
    whole = prepared.accounts["SC-2"]
    assert [s.cash for s in whole.sleeves] == [0.0, 0.0]
    assert whole.cash == 649.75
