"""The engine's speed devices change nothing that can be observed.

* trades built with a deferred sentence equal trades built whole, and behave like them
  (equality, hashing, repr, pickling, ``dataclasses.replace``, ``to_dict``);
* drift reports built on first read equal the ones built at once, and the summary's maxima
  (computed without building them) equal their ``max_abs_drift()``, of every level and of
  the security level;
* the per-reference caches (validated settings, priced symbols, model templates) never let
  a bad input through and follow a model replaced in the reference.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import fields, replace

import pytest
from ballast_engine.builders import reference, securities, sleeve, sma
from ballast_engine.errors import (
    NegativeQuantityError,
    SettingError,
    UnknownSecurityError,
    UnpricedSecurityError,
)
from ballast_engine.model import (
    Account,
    DriftItem,
    DriftLevel,
    Holding,
    Model,
    ModelEntry,
    RebalanceInput,
    Reference,
    Security,
    Settings,
    Trade,
)
from ballast_engine.rebalance import _drift_from_plans, measure_drift, rebalance
from ballast_engine.tactical import _new_trade, _sentence, plan_sleeve


def _golden_cases() -> list[tuple[str, RebalanceInput]]:
    """The golden test's seeded cases (its module, loaded by path: tests are no package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("test_engine_golden.py")
    spec = importlib.util.spec_from_file_location("engine_golden_cases", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.cases()  # type: ignore[no-any-return,unused-ignore]


CASES = _golden_cases()


def _whole(t: Trade) -> Trade:
    """The same trade built the ordinary way, sentence and all."""
    return Trade(**{f.name: getattr(t, f.name) for f in fields(Trade) if f.init})


@pytest.mark.parametrize("name", [n for n, inp in CASES if rebalance(inp).trades][::6])
def test_deferred_sentences_equal_whole_trades(name: str) -> None:
    inp = dict(CASES)[name]
    for t in rebalance(inp).trades:
        w = _whole(t)
        assert t == w and hash(t) == hash(w) and repr(t) == repr(w)
        assert t.to_dict() == w.to_dict()
        assert pickle.loads(pickle.dumps(t)) == w
    # a fresh trade: pickling, copying and replace() write the sentence first
    for t in rebalance(inp).trades:
        again = pickle.loads(pickle.dumps(t))
        assert again.explanation == t.explanation and again._explain is None
    fresh = rebalance(inp).trades[0]
    assert copy.copy(fresh) == fresh
    moved = replace(fresh, sleeve_id="other")
    assert moved.explanation == fresh.explanation and moved.sleeve_id == "other"


def test_new_trade_equals_the_constructor() -> None:
    from decimal import Decimal

    from ballast_engine.model import Reason, Side

    args = ("A", "s", "X", Side.SELL, Decimal("3"), 10.0, Decimal("30.00"), Reason.NOT_IN_MODEL)
    sentence = (_sentence, (1, 3.0, 3, "X", Decimal("30.00"), "M"))
    fast = _new_trade(*args, False, True, sentence)
    text = (
        "Sell all 3 shares of X (about $30.00): it is not in model M and not equivalent to "
        "any security in it."
    )
    assert fast == Trade(*args, text, False, True)
    assert fast.lots == () and fast.estimated_tax is None
    with pytest.raises(AttributeError):
        fast.no_such_field  # noqa: B018


@pytest.mark.parametrize("name", [n for n, _ in CASES][::3])
def test_deferred_drift_reports_and_their_maxima(name: str) -> None:
    inp = dict(CASES)[name]
    r = rebalance(inp)
    # the summary's maxima were computed without the items: they agree with them
    assert r.summary.max_drift_before == r.drift_before.max_abs_drift()
    assert r.summary.max_drift_after == r.drift_after.max_abs_drift()
    security = DriftLevel.SECURITY
    assert r.summary.max_security_drift_before == r.drift_before.max_abs_drift(security)
    assert r.summary.max_security_drift_after == r.drift_after.max_abs_drift(security)
    assert r.drift_before.items and r.drift_after.items
    assert isinstance(r.drift_before.items, tuple)
    assert pickle.loads(pickle.dumps(r.drift_after)) == r.drift_after
    if not inp.account.strategy_id and not inp.account.cash and inp.request.kind == "rebalance":
        # with nothing moved between sleeves, "before" is the account's drift as measured
        assert rebalance(inp).drift_before == measure_drift(inp.account, inp.reference)


def test_drift_before_equals_the_plans_drift() -> None:
    for name, inp in CASES[:50]:
        r = rebalance(inp)
        if r.sleeves[0].cash_in or r.sleeves[0].cash_out or inp.account.cash:
            continue  # flows move the targets: measured against other totals
        plans = [plan_sleeve(inp.account, sl, inp.reference) for sl in inp.account.sleeves]
        assert r.drift_before == _drift_from_plans(inp.account, inp.reference, plans), name


# --- caches never let bad input through ---------------------------------------------------


def _ref() -> Reference:
    secs = securities({"A": 10.0, "B": 20.0})
    secs["Z"] = Security("Z", None)
    return reference(secs, [Model("M", (ModelEntry("A", 0.5), ModelEntry("B", 0.5)))])


def test_validation_caches_still_reject_bad_accounts() -> None:
    ref = _ref()
    ok = sma("OK", "M", {"A": 10, "B": 5}, 100.0, Settings(min_trade_value=10))
    rebalance(RebalanceInput(ok, ref))  # warms the caches
    bad_qty = sma("Q", "M", {"A": -1, "B": 5}, 0.0, Settings(min_trade_value=10))
    with pytest.raises(NegativeQuantityError) as e:
        rebalance(RebalanceInput(bad_qty, ref))
    assert e.value.security == "A" and e.value.field == "quantity"
    nan_qty = sma("N", "M", {"A": float("nan")}, 0.0)
    with pytest.raises(NegativeQuantityError):
        rebalance(RebalanceInput(nan_qty, ref))
    with pytest.raises(UnknownSecurityError):
        rebalance(RebalanceInput(sma("U", "M", {"Q": 1}, 0.0), ref))
    with pytest.raises(UnpricedSecurityError):
        rebalance(RebalanceInput(sma("P", "M", {"Z": 1}, 0.0), ref))
    twice = Account("T", (sleeve("main", "M", {}, 0.0),))
    twice = replace(
        twice,
        sleeves=(replace(twice.sleeves[0], holdings=(Holding("A", 1.0), Holding("A", 2.0))),),
    )
    with pytest.raises(SettingError):
        rebalance(RebalanceInput(twice, ref))
    bad_settings = Settings(min_trade_value=-5)
    for _ in range(2):  # an invalid Settings is never remembered as valid
        with pytest.raises(NegativeQuantityError):
            rebalance(RebalanceInput(sma("S", "M", {"A": 1}, 0.0, bad_settings), ref))


def test_model_template_follows_a_replaced_model() -> None:
    ref = _ref()
    acct = sma("X", "M", {"A": 10, "B": 5}, 0.0)
    first = rebalance(RebalanceInput(acct, ref))
    assert first.trades == ()  # $100 each: balanced
    ref.models["M"] = Model("M", (ModelEntry("A", 1.0),))  # type: ignore[index,unused-ignore]
    from ballast_engine.validate import ref_index

    ref_index(ref).validated_models.discard("M")
    second = rebalance(RebalanceInput(acct, ref))
    assert {t.symbol: t.side.value for t in second.trades} == {"A": "buy", "B": "sell"}


def test_money_rounding_fast_path_equals_the_decimal_route() -> None:
    """``_dec`` formats cents directly below $1e12; the result (value and exponent) is the
    ``Decimal(repr(round(x, 2))).quantize(CENT)`` it replaces, ties and all."""
    import random
    from decimal import Decimal

    from ballast_engine.rebalance import _dec
    from ballast_engine.tactical import CENT

    rng = random.Random(3)
    values = [0.0, -0.0, 0.005, 0.015, 2.675, 1.005, -1.005, 999_999_999_999.99, 1e12, 3e15]
    for _ in range(20_000):
        x = rng.choice([-1, 1]) * 10 ** rng.uniform(-3, 13)
        values += [x, round(x, 3), int(x * 1000) / 1000 + 0.005]
    for x in values:
        expected = Decimal(repr(round(float(x), 2) + 0.0)).quantize(CENT)
        got = _dec(x)
        assert str(got) == str(expected), x


def test_model_template_follows_a_new_price() -> None:
    """A new price is a new Security object: the cached model rows are made again."""
    ref = _ref()
    acct = sma("X", "M", {"A": 10, "B": 5}, 0.0)
    assert rebalance(RebalanceInput(acct, ref)).trades == ()
    ref.securities["A"] = Security("A", 30.0)  # type: ignore[index,unused-ignore]
    from ballast_engine.validate import ref_index

    ref_index(ref).priced_models.discard("M")
    moved = rebalance(RebalanceInput(acct, ref))  # A is now $300 of $400: sell A, buy B
    assert {t.symbol: t.side.value for t in moved.trades} == {"A": "sell", "B": "buy"}
    fresh = rebalance(RebalanceInput(acct, _ref_with_a_at(30.0)))
    assert moved == fresh


def _ref_with_a_at(price: float) -> Reference:
    ref = _ref()
    ref.securities["A"] = Security("A", price)  # type: ignore[index,unused-ignore]
    return ref


def _plain_item_dict(i: DriftItem) -> dict[str, object]:
    """``DriftItem.to_dict`` as first written, through the properties."""
    rel = i.relative_drift
    return {
        "level": i.level.value,
        "key": i.key,
        "sleeve_id": i.sleeve_id,
        "weight": round(i.weight, 6),
        "target": round(i.target, 6),
        "drift": round(i.drift, 6),
        "relative_drift": None if rel is None else round(rel, 6),
        "lower": round(i.lower, 6),
        "upper": round(i.upper, 6),
        "out_of_band": i.out_of_band,
    }


@pytest.mark.parametrize("name", [n for n, _ in CASES][1::4])
def test_drift_report_to_dict_equals_the_plain_route(name: str) -> None:
    r = rebalance(dict(CASES)[name])
    for report in (r.drift_before, r.drift_after):
        plain = {
            "account_id": report.account_id,
            "out_of_band": [_plain_item_dict(i) for i in report.out_of_band],
            "max_abs_drift": {lv.value: round(report.max_abs_drift(lv), 6) for lv in DriftLevel},
            "items": [_plain_item_dict(i) for i in report.items],
        }
        got = report.to_dict()
        assert got == plain
        assert list(got) == list(plain) and [list(d) for d in got["items"]] == [
            list(d) for d in plain["items"]
        ]
        for d in got["out_of_band"]:  # copies: changing one leaves the items alone
            d["key"] = "changed"
        assert all(d["key"] != "changed" for d in got["items"])
