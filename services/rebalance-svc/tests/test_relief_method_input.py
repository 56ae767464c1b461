"""The account's relief method reaches the engine as it is on the wire: one vocabulary, no
mapping table, the engine's default for an account that never set one."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from ballast_common.contracts.events import LossSaleV1
from ballast_engine.model import Account as EngineAccount
from ballast_engine.model import Holding, Reference, Security, Sleeve, TaxLot
from ballast_engine.tax.model import DEFAULT_RELIEF_METHOD, WASH_WINDOW_DAYS, ReliefMethod
from ballast_engine.taxaware import tax_context as engine_tax_context
from rebalance_svc.engine_input import WASH_WINDOW, engine_tax, tax_context

AS_OF = date(2026, 11, 20)


@pytest.mark.parametrize("name", ["fifo", "lifo", "hifo", "mintax"])
def test_the_accounts_method_is_the_engines(name: str) -> None:
    ctx = tax_context("S-1", "taxable", "HH-1", {"relief_method": name}, [])
    assert engine_tax(ctx, AS_OF, None).method is ReliefMethod(name)


def test_an_account_that_set_no_method_gets_the_engines_default() -> None:
    ctx = tax_context("S-1", "taxable", "HH-1", None, [])
    assert engine_tax(ctx, AS_OF, None).method is DEFAULT_RELIEF_METHOD


def test_mintax_ranks_lots_by_tax_cost_in_the_engine() -> None:
    # A at $100: a long-term loss (-$10/share x 20% = -2.00) ranks before a short-term loss
    # (-$3/share x 37% = -1.11) by tax cost; FIFO would sell the older gain lot first
    lots = (
        TaxLot("OLD-GAIN", 10, 500.0, "2015-01-02"),
        TaxLot("ST-LOSS", 10, 1030.0, "2026-06-01"),
        TaxLot("LT-LOSS", 10, 1100.0, "2024-01-02"),
    )
    ctx = tax_context("S-1", "taxable", "HH-1", {"relief_method": "mintax"}, [])
    account = EngineAccount(
        "S-1",
        (Sleeve("main", "M", holdings=(Holding("A", 30, lots),)),),
        tax=engine_tax(ctx, AS_OF, None),
    )
    ref = Reference({"A": Security("A", 100.0, "eq", "Tech")})
    ranked = engine_tax_context(account, ref).positions["main", "A"].ranked
    assert [lot.lot_id for lot in ranked] == ["LT-LOSS", "ST-LOSS", "OLD-GAIN"]


def test_the_wash_window_is_the_engines() -> None:
    assert timedelta(days=WASH_WINDOW_DAYS) == WASH_WINDOW
    old = LossSaleV1(
        symbol="A",
        sold_on=AS_OF - timedelta(days=WASH_WINDOW_DAYS + 1),
        quantity=Decimal("1"),
        loss_per_share=Decimal("1"),
    )
    inside = old.model_copy(update={"sold_on": AS_OF - timedelta(days=WASH_WINDOW_DAYS)})
    ctx = tax_context("S-1", "taxable", "HH-1", None, [old, inside])
    sales = engine_tax(ctx, AS_OF, None).recent_loss_sales
    assert [s.sold_on for s in sales] == [inside.sold_on.isoformat()]
