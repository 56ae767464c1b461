"""Tax-loss harvesting as a rebalance mode: worked examples computed by hand."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from ballast_engine.cli import main
from ballast_engine.errors import EngineInputError
from ballast_engine.harvesting import harvest, harvest_book
from ballast_engine.model import (
    Account,
    Book,
    EquivalenceSet,
    HarvestSettings,
    Holding,
    LossSale,
    Model,
    ModelEntry,
    Reason,
    RebalanceInput,
    RecentPurchase,
    Reference,
    Request,
    RequestKind,
    Restriction,
    RestrictionKind,
    RestrictionScope,
    Security,
    Sleeve,
    TaxLot,
    TaxSettings,
)
from ballast_engine.rebalance import rebalance

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ei:
        main(list(argv))
    out = capsys.readouterr()
    return int(ei.value.code or 0), out.out, out.err


AS_OF = "2026-11-20"

SECS = {
    "VOO": Security("VOO", 400.0),
    "IVV": Security("IVV", 401.0),
    "SCHB": Security("SCHB", 50.0),
    "BND": Security("BND", 70.0),
}
MODEL = Model("M", (ModelEntry("VOO", 0.6), ModelEntry("BND", 0.4)))
# V1: 10 VOO bought 2026-01-10 for $500 each: at $400 a short-term loss of $1,000 (20%);
# V2: 5 bought 2024 for $380: a gain (not harvested)
LOTS = (TaxLot("V1", 10, 5000.0, "2026-01-10"), TaxLot("V2", 5, 1900.0, "2024-01-10"))
BND_LOTS = (TaxLot("B1", 57, 4000.0, "2025-01-01"),)  # $70.18 basis: a 0.25% loss


def reference(*sets: EquivalenceSet) -> Reference:
    return Reference(
        SECS,
        {"M": MODEL},
        equivalence_sets=sets or (EquivalenceSet("sp500", ("VOO", "IVV", "SCHB")),),
    )


def account(tax: TaxSettings, restrictions=()) -> Account:
    return Account(
        "H1",
        (
            Sleeve(
                "s",
                "M",
                100.0,
                (Holding("VOO", 15, LOTS), Holding("BND", 57, BND_LOTS)),
            ),
        ),
        restrictions=restrictions,
        tax=tax,
    )


HARVEST = HarvestSettings(10, 200)


def test_harvest_sells_the_loss_lot_and_buys_the_first_unblocked_replacement() -> None:
    tax = TaxSettings(AS_OF, harvest=HARVEST)
    r = harvest(RebalanceInput(account(tax), reference()))
    # IVV is the first replacement named by the set: $4,000 buys 9 IVV at $401
    assert [(t.side.value, t.symbol, float(t.quantity)) for t in r.trades] == [
        ("sell", "VOO", 10),
        ("buy", "IVV", 9),
    ]
    s, b = r.trades
    assert s.reason is Reason.TAX_LOSS_HARVEST and b.reason is Reason.TAX_LOSS_HARVEST
    assert s.lot_ids == ("V1",)
    assert s.estimated_tax == Decimal("-370.00")  # -1,000 x 37%
    assert b.estimated_value <= s.estimated_value  # never spends more than the sale raised
    assert "2026-12-21" in s.explanation  # swap back after 31 days
    assert r.tax is not None and r.tax.tax_saved == Decimal("370.00")
    assert r.request.kind is RequestKind.HARVEST
    assert r.sleeves[0].projected_holdings["IVV"] == 9


def test_buy_blocked_replacement_is_skipped() -> None:
    # a household loss sale of IVV 19 days ago: SCHB is bought instead (80 x $50 = $4,000)
    tax = TaxSettings(
        AS_OF, harvest=HARVEST, recent_loss_sales=(LossSale("IVV", "2026-11-01", 10, 5.0),)
    )
    r = harvest(RebalanceInput(account(tax), reference()))
    assert [(t.symbol, float(t.quantity)) for t in r.trades] == [("VOO", 10), ("SCHB", 80)]
    assert "wash_sale_buy_block" in {n.code for n in r.notices}


def test_identical_members_are_never_bought() -> None:
    # VOO and IVV are substantially identical (one fund's two classes, a set marked
    # identical): IVV may not replace VOO, so without another replacement nothing happens
    same = (EquivalenceSet("same-fund", ("VOO", "IVV"), identical=True),)
    r = harvest(RebalanceInput(account(TaxSettings(AS_OF, harvest=HARVEST)), reference(*same)))
    assert r.trades == ()
    assert any(n.code == "harvest_skipped" and n.symbol == "VOO" for n in r.notices)
    # the model holds VOO and names SCHB its buy-list replacement: SCHB is bought (80 x $50)
    model = Model(
        "M", (ModelEntry("VOO", 0.6, hold=True, replacement="SCHB"), ModelEntry("BND", 0.4))
    )
    ref2 = Reference(SECS, {"M": model}, equivalence_sets=same)
    r2 = harvest(RebalanceInput(account(TaxSettings(AS_OF, harvest=HARVEST)), ref2))
    assert [(t.symbol, float(t.quantity)) for t in r2.trades] == [("VOO", 10), ("SCHB", 80)]


def test_a_recent_purchase_means_no_harvest() -> None:
    # the spouse bought VOO five days ago: selling V1 at a loss would be washed
    tax = TaxSettings(
        AS_OF, harvest=HARVEST, recent_purchases=(RecentPurchase("VOO", "2026-11-15", 3),)
    )
    r = harvest(RebalanceInput(account(tax), reference()))
    assert r.trades == ()
    assert any("wash" in n.message for n in r.notices if n.code == "harvest_skipped")


def test_thresholds_and_schedule() -> None:
    # 20% and $1,000 of loss: a $1,500 threshold stops it, unless the schedule lowers it
    strict = HarvestSettings(10, 1500)
    assert (
        harvest(RebalanceInput(account(TaxSettings(AS_OF, harvest=strict)), reference())).trades
        == ()
    )
    sched = HarvestSettings(10, 1500, ((11, 15.0, 500.0),))
    r = harvest(RebalanceInput(account(TaxSettings(AS_OF, harvest=sched)), reference()))
    assert [t.symbol for t in r.trades] == ["VOO", "IVV"]
    assert "past the 15% and $500.00 thresholds" in r.trades[0].explanation


def test_restricted_replacement_and_do_not_sell() -> None:
    dnb = Restriction(RestrictionKind.DO_NOT_BUY, RestrictionScope.SECURITY, "IVV")
    r = harvest(RebalanceInput(account(TaxSettings(AS_OF, harvest=HARVEST), (dnb,)), reference()))
    assert [t.symbol for t in r.trades] == ["VOO", "SCHB"]
    dns = Restriction(RestrictionKind.DO_NOT_SELL, RestrictionScope.SECURITY, "VOO")
    r2 = harvest(RebalanceInput(account(TaxSettings(AS_OF, harvest=HARVEST), (dns,)), reference()))
    assert r2.trades == ()


def test_harvest_request_through_rebalance_and_book() -> None:
    inp = RebalanceInput(
        account(TaxSettings(AS_OF, harvest=HARVEST)), reference(), Request(RequestKind.HARVEST)
    )
    assert rebalance(inp).to_dict() == harvest(inp).to_dict()
    plain = Account("P", (Sleeve("s", "M", 0.0, (Holding("VOO", 1),)),))
    bad = Account(
        "B",
        (Sleeve("s", "M", 0.0, (Holding("VOO", 15, LOTS),)),),
        tax=TaxSettings(AS_OF, short_term_rate=2.0),
    )
    book = harvest_book(Book(reference(), (inp.account, plain, bad)), on="2026-11-20")
    assert [r.account_id for r in book.results] == ["H1", "P"]
    assert book.results[1].trades == () and book.results[1].notices[0].code == "not_tax_aware"
    assert [f.account_id for f in book.failures] == ["B"]
    with pytest.raises(EngineInputError):
        rebalance(RebalanceInput(inp.account, reference(), Request(RequestKind.HARVEST, 5.0)))


def test_swap_back_after_the_window() -> None:
    # SCHB bought 2026-09-15 as VOO's replacement, at $50 now and $51 then: no gain, VOO not
    # blocked -> 100 SCHB ($5,000) sold, 12 VOO ($4,800) bought
    tax = TaxSettings(AS_OF, harvest=HarvestSettings(10, 200, swap_back=True))
    a = Account(
        "H2",
        (
            Sleeve(
                "s",
                "M",
                0.0,
                (
                    Holding("SCHB", 100, (TaxLot("R1", 100, 5100.0, "2026-09-15"),)),
                    Holding("BND", 57, BND_LOTS),
                ),
            ),
        ),
        tax=tax,
    )
    r = harvest(RebalanceInput(a, reference()))
    assert [(t.side.value, t.symbol, float(t.quantity), t.reason) for t in r.trades] == [
        ("sell", "SCHB", 100, Reason.SWAP_BACK),
        ("buy", "VOO", 12, Reason.SWAP_BACK),
    ]
    # while VOO is still blocked (its harvest was 10 days ago) nothing is swapped
    blocked = TaxSettings(
        AS_OF,
        harvest=HarvestSettings(10, 200, swap_back=True),
        recent_loss_sales=(LossSale("VOO", "2026-11-10", 10, 100.0),),
    )
    from dataclasses import replace

    assert harvest(RebalanceInput(replace(a, tax=blocked), reference())).trades == ()


def test_harvest_example_and_cli(capsys) -> None:
    path = str(EXAMPLES / "tax_harvest.json")
    code, out, _ = cli(capsys, "engine", "rebalance", path)
    assert code == 0
    res = json.loads(out)
    assert [(t["symbol"], t["reason"]) for t in res["trades"]] == [
        ("VXUS", "tax-loss-harvest"),
        ("VEU", "tax-loss-harvest"),
        ("SCHB", "swap-back"),
        ("VTI", "swap-back"),
    ]
    assert res["trades"][0]["lot_ids"] == ["L-VXUS-1"]
    assert res["tax"]["tax_saved"] == "194.25"  # 50 x ($70 - $59.50) x 37%
    code, table, _ = cli(capsys, "engine", "harvest", path, "--format", "table")
    assert code == 0
    assert "Lots relieved" in table and "harvested tax saved $194.25" in table
    code, _, err = cli(capsys, "engine", "harvest", path, "--on", "2026-02-30")
    assert code == 2 and "tax.as_of" in err and err.count("\n") == 1
    assert err.startswith("ballast engine harvest: error: ")


def test_tax_aware_example_and_cli(capsys) -> None:
    path = str(EXAMPLES / "tax_aware.json")
    code, table, _ = cli(capsys, "engine", "rebalance", path, "--format", "table")
    assert code == 0
    assert "Only 24 of the 25 shares" in table
    assert "Tax (taxable, 2026-11-20)" in table and "L-VTI-3" in table
    code, out, _ = cli(capsys, "engine", "rebalance", path)
    res = json.loads(out)
    assert not any(t["symbol"] == "BND" and t["side"] == "buy" for t in res["trades"])
    assert res["tax"]["budget"]["remaining_after"] == "120.00"
    assert res["tax"]["sell_blocked_lots"] == ["L-VXUS-1"]
    assert all(t["side"] == "buy" or t["lot_ids"] for t in res["trades"])
