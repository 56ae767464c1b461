"""The engine's entry points: ``rebalance`` (one account), ``rebalance_book`` (many),
``project`` (an account after its trades) and ``measure_drift`` (one account's drift).

This module chooses the layer that answers a request, and is the only one that knows them
all: a harvest request goes to harvesting, an account with tax settings to the tax-aware
layer, every other account to the core. The layers call down, never up:

    rebalance -> harvesting -> taxaware -> core -> tactical / strategic
"""

from __future__ import annotations

import math
from dataclasses import replace

from ballast_engine.account_drift import drift_from_plans, measure_drift
from ballast_engine.amounts import cents
from ballast_engine.core import rebalance_account
from ballast_engine.errors import EngineError, EngineInputError, NegativeQuantityError, SettingError
from ballast_engine.harvesting import harvest_account
from ballast_engine.model import (
    Account,
    AccountFailure,
    Book,
    BookResult,
    Holding,
    RebalanceInput,
    RebalanceResult,
    Reference,
    Request,
    RequestKind,
    Side,
)
from ballast_engine.taxaware import rebalance_tax_aware
from ballast_engine.validate import check_account

__all__ = ["measure_drift", "project", "rebalance", "rebalance_book"]

# the names test_engine_fast_paths.py imports from here (now public in their own modules)
_dec = cents
_drift_from_plans = drift_from_plans


def rebalance(inp: RebalanceInput) -> RebalanceResult:
    """Propose the trades of one account.

    Args:
        inp: the account, the reference data (security master, models, strategies, lists,
            equivalence sets) and the request (rebalance, raise cash, invest cash).

    Returns:
        Trades per sleeve with reasons and explanations, cash moved between sleeves,
        projected holdings and weights, drift before and after, notices and a summary.

    Raises:
        EngineInputError: a typed subclass naming account, sleeve, security and field when
            the input is invalid (unknown or unpriced security, weights not summing to 100%,
            negative quantity, band wider than its target allows, ...).
    """
    account, ref, req = inp.account, inp.reference, inp.request
    check_account(ref, account)
    _check_request(req, account.account_id)
    try:
        return _answer(account, ref, req)
    except EngineInputError as exc:
        raise exc.located(account=account.account_id) from None


def _answer(account: Account, ref: Reference, req: Request) -> RebalanceResult:
    """The layer for the request: harvesting, tax-aware (the account has tax settings) or
    the core."""
    if req.kind is RequestKind.HARVEST:
        return harvest_account(account, ref, req)
    if account.tax is not None:
        return rebalance_tax_aware(account, ref, req)
    return rebalance_account(account, ref, req)


def _check_request(req: Request, account_id: str) -> None:
    """Reject a request amount that is negative or not a number, or given to a rebalance."""
    if not math.isfinite(req.amount) or req.amount < 0:
        raise NegativeQuantityError(
            f"request amount must be ≥ 0, got {req.amount!r}", account=account_id, field="amount"
        )
    if req.kind is RequestKind.REBALANCE and req.amount:
        raise SettingError(
            "a rebalance request takes no amount (use raise_cash or invest_cash)",
            account=account_id,
            field="amount",
        )


def rebalance_book(book: Book) -> BookResult:
    """Rebalance every account of a book; a bad account is reported and skipped.

    Returns:
        ``BookResult`` with one ``RebalanceResult`` per good account (in book order) and one
        ``AccountFailure`` per account whose input was invalid.
    """
    results: list[RebalanceResult] = []
    failures: list[AccountFailure] = []
    for acct in book.accounts:
        try:
            results.append(rebalance(RebalanceInput(acct, book.reference, book.request)))
        except EngineInputError as exc:
            failures.append(
                AccountFailure(acct.account_id, exc.one_line(), exc.code, exc.to_dict())
            )
        except EngineError as exc:  # pragma: no cover - defensive
            failures.append(AccountFailure(acct.account_id, str(exc), "engine_error", {}))
    return BookResult(tuple(results), tuple(failures))


def project(inp: RebalanceInput, result: RebalanceResult) -> Account:
    """The account as it would be after the proposed trades and cash movements
    (the withdrawal paid out, the deposit received), at the same prices."""
    by_sleeve = {s.sleeve_id: s for s in result.sleeves}
    sleeves = []
    for sl in inp.account.sleeves:
        sr = by_sleeve[sl.sleeve_id]
        holdings = tuple(Holding(sym, q) for sym, q in sr.projected_holdings.items())
        cash = sl.cash + float(sr.cash_in) - float(sr.cash_out)
        for t in sr.trades:
            v = float(t.quantity) * t.price
            cash += -v if t.side is Side.BUY else v
        sleeves.append(replace(sl, holdings=holdings, cash=cash))
    return replace(inp.account, sleeves=tuple(sleeves), cash=float(result.unallocated_cash_after))
