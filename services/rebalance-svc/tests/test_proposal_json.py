"""trades-proposed written straight from the engine's result (`engine_input.proposal_json`)
is byte for byte what `TradesProposedV1` writes; the derived ids are uuid5's, decimals are
written as the contracts write them, and a lot with a wash adjustment is a replacement. Pure."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from ballast_common.contracts.events import TradesProposedV1, TradeV1
from ballast_engine.model import (
    AccountDrift,
    CashMovement,
    LotSale,
    Reason,
    RebalanceResult,
    Request,
    Side,
    Summary,
    Trade,
)
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError
from rebalance_svc.engine_input import (
    _decimal_text,
    cash_movements,
    money,
    proposal_json,
    proposal_metrics,
    tax_lots,
)
from rebalance_svc.service import IDS, derived_id

RUN_ID = uuid.UUID("0b7c2a4e-1d2f-4a7b-9c3e-5f6a7b8c9d0e")
NAMES = st.text(min_size=1, max_size=12)
AMOUNTS = st.decimals(min_value=-(10**9), max_value=10**9, allow_nan=False, allow_infinity=False)
CENTS = st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False)


def _lot(lot_id: str) -> LotSale:
    zero = Decimal(0)
    return LotSale(lot_id, Decimal(1), "2026-01-02", zero, zero, zero, "long", zero)


@st.composite
def trades(draw: st.DrawFn) -> Trade:
    return Trade(
        account_id="a",
        sleeve_id=draw(NAMES),
        symbol=draw(st.from_regex(r"[A-Z][A-Z0-9.\-]{0,7}", fullmatch=True)),
        side=draw(st.sampled_from(Side)),
        quantity=draw(st.decimals(min_value=Decimal("1e-8"), max_value=10**9, allow_nan=False)),
        price=draw(st.floats(min_value=1e-6, max_value=1e7)),
        estimated_value=draw(st.decimals(min_value=0, max_value=10**12, allow_nan=False)),
        reason=draw(st.sampled_from(Reason)),
        explanation=draw(st.text(max_size=60)),
        lots=tuple(_lot(i) for i in draw(st.lists(NAMES, max_size=3))),
        estimated_tax=draw(st.none() | CENTS | AMOUNTS),
    )


MOVES = st.builds(
    CashMovement,
    account_id=st.just("a"),
    from_sleeve=st.none() | st.sampled_from(["s1", "s2", 'q"uote']),
    to_sleeve=st.none() | st.sampled_from(["s1", "s2"]),
    amount=st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False),
    explanation=st.just(""),
    purpose=st.sampled_from(["rebalance", "unallocated", "withdrawal"]),
)


def result_of(account_id: str, trades: list[Trade], moves: list[CashMovement], cash) -> Any:
    summary = Summary(
        len(trades), 0, 0, Decimal(0), Decimal(0), 0.0, Decimal(0), cash[0], cash[1], 0.0, 0.0
    )
    drift = AccountDrift(account_id, ())
    return RebalanceResult(
        account_id,
        Request(),
        tuple(trades),
        (),
        tuple(moves),
        Decimal(0),
        drift,
        drift,
        (),
        summary,
    )


def model_bytes(proposal_id: str, result: RebalanceResult, trade_ids: list[str], uma: bool):
    return TradesProposedV1(
        proposal_id=uuid.UUID(proposal_id),
        run_id=RUN_ID,
        account_id=result.account_id,
        model_id="core",
        model_version=7,
        cash_before=result.summary.cash_before,
        cash_after_estimated=result.summary.cash_after,
        cash_movements=cash_movements(result) if uma else [],
        metrics=proposal_metrics(result),
        trades=[
            TradeV1(
                trade_id=uuid.UUID(trade_id),
                symbol=t.symbol,
                side=t.side.value,
                quantity=t.quantity,
                estimated_price=money(t.price),
                estimated_value=t.estimated_value,
                reason=t.reason.value,
                explanation=t.explanation,
                sleeve_id=t.sleeve_id if uma else None,
                lot_ids=list(t.lot_ids),
                estimated_tax=t.estimated_tax,
            )
            for t, trade_id in zip(result.trades, trade_ids, strict=True)
        ],
    ).model_dump_json()


# odd values: a tiny fraction, a price that rounds to six decimals, an exponent, quotes,
# a backslash, a line separator and non-ASCII text in the sentence
ODD_TRADE = Trade(
    "a",
    "s1",
    "EQ.B",
    Side.SELL,
    Decimal("0.00001"),
    0.0000015,
    Decimal("1E+3"),
    Reason.TAX_LOSS_HARVEST,
    "Sell 1 share (about $1,000.00) – “quoted” \\ \u2028 ≥ 5%",
    lots=(_lot("lot-1"), _lot("lot-2")),
    estimated_tax=Decimal("-12.50"),
)


@given(
    account_id=NAMES,
    trades=st.lists(trades(), min_size=1, max_size=6),
    moves=st.lists(MOVES, max_size=4),
    cash=st.tuples(CENTS | AMOUNTS, CENTS | AMOUNTS),
    uma=st.booleans(),
)
@example(
    account_id='a "quoted" \\ id\n',
    trades=[ODD_TRADE],
    moves=[
        CashMovement("a", "s1", "s1", Decimal("5.00"), ""),  # no move: left out
        CashMovement("a", None, "s2", Decimal("0"), ""),  # nothing moved: left out
        CashMovement("a", "s2", None, Decimal("7.10"), "", "withdrawal"),
    ],
    cash=(Decimal("-0.00"), Decimal("1E+2")),
    uma=True,
)
def test_proposals_written_from_results_are_the_models_bytes(
    account_id, trades, moves, cash, uma
) -> None:
    result = result_of(account_id, trades, moves, cash)
    proposal_id = derived_id(f"proposal:{RUN_ID}:{account_id}")
    trade_ids = [derived_id(f"trade:{proposal_id}:{i}") for i in range(len(trades))]
    written = proposal_json(proposal_id, RUN_ID, ("core", 7), result, trade_ids, uma)
    assert written == model_bytes(proposal_id, result, trade_ids, uma).encode()


@pytest.mark.parametrize(
    ("quantity", "price", "value"),
    [
        (Decimal(0), 10.0, Decimal(1)),
        (Decimal(1), 1e-7, Decimal(1)),
        (Decimal(1), 5.0, Decimal(-1)),
    ],
)
def test_a_trade_the_contract_refuses_is_refused_naming_it(quantity, price, value) -> None:
    trade = Trade("a", "main", "EQ1", Side.BUY, quantity, price, value, Reason.DRIFT, "x")
    result = result_of("acct-1", [trade], [], (Decimal(0), Decimal(0)))
    trade_ids = [str(uuid.uuid4())]
    with pytest.raises(ValidationError):
        model_bytes(str(uuid.uuid4()), result, trade_ids, False)
    with pytest.raises(ValueError, match="trade buy EQ1 of account acct-1"):
        proposal_json(str(uuid.uuid4()), RUN_ID, ("core", 7), result, trade_ids, False)


@given(st.text())
@example("trade:2f1c…:main:buy:EQ1")
def test_derived_ids_are_uuid5(name: str) -> None:
    assert derived_id(name) == str(uuid.uuid5(IDS, name))


@given(st.decimals(allow_nan=False, allow_infinity=False))
@example(Decimal("1E+3"))
@example(Decimal("1E-7"))
@example(Decimal("-0.000001"))
def test_decimals_are_written_as_the_contracts_write_them(value: Decimal) -> None:
    assert _decimal_text(value) == format(value, "f")


@given(
    st.none()
    | st.sampled_from(["", "0", "0.00", "0.0", "-0.00", "0E-2", "12.50"])
    | st.decimals(allow_nan=False, allow_infinity=False).map(str)
    | st.integers(-5, 5)
)
def test_a_lot_is_a_replacement_when_its_basis_carries_a_wash_adjustment(adjustment) -> None:
    lot = {"lot_id": "L1", "quantity": "3", "cost_basis": "30.00", "acquired": "2026-01-02"}
    [made] = tax_lots([{**lot, "wash_adjustment": adjustment}])
    assert made.replacement is bool(Decimal(str(adjustment or 0)))
