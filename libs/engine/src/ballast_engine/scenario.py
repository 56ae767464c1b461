"""Scenario and book files: JSON <-> engine dataclasses.

A *scenario* holds everything one rebalance needs (reference data, one account, the
request); a *book* holds the same reference data and many accounts. The JSON Schemas are
``schemas/scenario.schema.json`` and ``schemas/book.schema.json`` (package data); this
module does its own checking so the engine needs no schema library at run time, and every
problem is reported as a ``ScenarioFormatError`` naming the field's path.

Money and quantities may be JSON numbers or decimal strings (``"1234.56"``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from ballast_engine.errors import ScenarioFormatError
from ballast_engine.model import (
    Account,
    Band,
    BandKind,
    Book,
    EquivalenceSet,
    FreedCashPolicy,
    GainBudgetSetting,
    HarvestSettings,
    Holding,
    LossSale,
    Model,
    ModelEntry,
    RangeKind,
    RebalanceInput,
    RebalanceRange,
    RecentPurchase,
    Reference,
    Request,
    RequestKind,
    Restriction,
    RestrictionKind,
    RestrictionScope,
    Scope,
    Security,
    Settings,
    Sleeve,
    Strategy,
    StrategyEntry,
    TaxLot,
    TaxSettings,
)
from ballast_engine.tax.model import DEFAULT_RELIEF_METHOD, RELIEF_METHOD_NAMES, ReliefMethod

SCENARIO_FORMAT = "ballast.scenario/1"
BOOK_FORMAT = "ballast.book/1"


def schema(name: str = "scenario") -> dict[str, Any]:
    """The JSON Schema of a scenario (``"scenario"``) or book (``"book"``) file."""
    text = resources.files("ballast_engine").joinpath(f"schemas/{name}.schema.json").read_text()
    return json.loads(text)


# --------------------------------------------------------------------------------------------
# Reading


class _Obj:
    """A JSON object with its path, for precise error messages."""

    __slots__ = ("account", "d", "path", "sleeve")

    def __init__(self, d: Any, path: str, account: str | None = None, sleeve: str | None = None):
        if not isinstance(d, Mapping):
            raise ScenarioFormatError(
                f"expected an object, got {type(d).__name__}",
                field=path or "(root)",
                account=account,
                sleeve=sleeve,
            )
        self.d, self.path, self.account, self.sleeve = d, path, account, sleeve

    def err(self, key: str, msg: str) -> ScenarioFormatError:
        return ScenarioFormatError(
            msg, field=self._p(key), account=self.account, sleeve=self.sleeve
        )

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.d and self.d[key] is not None

    def raw(self, key: str) -> Any:
        if key not in self.d:
            raise self.err(key, "is required")
        return self.d[key]

    def text(self, key: str, default: str | None = None, *, required: bool = True) -> Any:
        if not self.has(key):
            if required and default is None:
                raise self.err(key, "is required")
            return default
        v = self.d[key]
        if not isinstance(v, str) or not v:
            raise self.err(key, f"must be a non-empty string, got {v!r}")
        return v

    def num(self, key: str, default: float | None = None) -> float:
        if not self.has(key):
            if default is None:
                raise self.err(key, "is required")
            return default
        v = self.d[key]
        if isinstance(v, bool):
            raise self.err(key, f"must be a number, got {v!r}")
        if isinstance(v, int | float):
            f = float(v)
        elif isinstance(v, str):
            try:
                f = float(Decimal(v))
            except InvalidOperation:
                raise self.err(key, f"must be a number or a decimal string, got {v!r}") from None
        else:
            raise self.err(key, f"must be a number, got {v!r}")
        if not math.isfinite(f):
            raise self.err(key, f"must be finite, got {v!r}")
        return f

    def opt_num(self, key: str) -> float | None:
        return self.num(key) if self.has(key) else None

    def flag(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        v = self.d[key]
        if not isinstance(v, bool):
            raise self.err(key, f"must be true or false, got {v!r}")
        return v

    def lst(self, key: str, *, required: bool = False) -> list[Any]:
        if not self.has(key):
            if required:
                raise self.err(key, "is required")
            return []
        v = self.d[key]
        if not isinstance(v, list):
            raise self.err(key, f"must be a list, got {type(v).__name__}")
        return v

    def obj(self, key: str) -> _Obj | None:
        if not self.has(key):
            return None
        return _Obj(self.d[key], self._p(key), self.account, self.sleeve)

    def items(self, key: str, *, required: bool = False) -> list[_Obj]:
        return [
            _Obj(x, f"{self._p(key)}[{i}]", self.account, self.sleeve)
            for i, x in enumerate(self.lst(key, required=required))
        ]

    def enum(self, key: str, cls: Any, default: Any) -> Any:
        if not self.has(key):
            return default
        v = self.d[key]
        try:
            return cls(v)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise self.err(key, f"must be one of {allowed}, got {v!r}") from None

    def no_extra(self, allowed: set[str]) -> None:
        extra = sorted(set(self.d) - allowed)
        if extra:
            raise self.err(extra[0], "is not a known field (misspelt?)")


def _band(o: _Obj | None, default: Band) -> Band:
    if o is None:
        return default
    o.no_extra({"kind", "width"})
    return Band(o.enum("kind", BandKind, BandKind.ABSOLUTE), o.num("width"))


def reference_from_dict(d: Mapping[str, Any]) -> Reference:
    root = _Obj(d, "")
    secs: dict[str, Security] = {}
    for o in root.items("securities", required=True):
        o.no_extra({"symbol", "price", "asset_class", "sector", "fractional"})
        sym = o.text("symbol")
        if sym in secs:
            raise o.err("symbol", f"security {sym!r} is listed twice")
        secs[sym] = Security(
            sym,
            o.opt_num("price"),
            o.text("asset_class", "unclassified"),
            o.text("sector", required=False),
            o.flag("fractional", False),
        )
    models: dict[str, Model] = {}
    for o in root.items("models"):
        o.no_extra({"model_id", "kind", "cash_weight", "cash", "entries"})
        mid = o.text("model_id")
        entries = []
        for e in o.items("entries", required=True):
            e.no_extra({"symbol", "weight", "shares", "hold", "replacement", "band"})
            band_o = e.obj("band")
            entries.append(
                ModelEntry(
                    e.text("symbol"),
                    e.num("weight", 0.0),
                    e.num("shares", 0.0),
                    e.flag("hold", False),
                    e.text("replacement", required=False),
                    _band(band_o, Band()) if band_o is not None else None,
                )
            )
        kind = o.text("kind", "weights")
        if kind not in ("weights", "shares"):
            raise o.err("kind", f"must be 'weights' or 'shares', got {kind!r}")
        if mid in models:
            raise o.err("model_id", f"model {mid!r} is listed twice")
        models[mid] = Model(
            mid, tuple(entries), kind, o.num("cash_weight", 0.0), o.num("cash", 0.0)
        )
    strategies: dict[str, Strategy] = {}
    for o in root.items("strategies"):
        o.no_extra({"strategy_id", "entries", "rebalance_range", "band"})
        sid = o.text("strategy_id")
        default_band = _band(o.obj("band"), Band())
        entries_s = []
        for e in o.items("entries", required=True):
            e.no_extra({"model_id", "weight", "band"})
            entries_s.append(
                StrategyEntry(
                    e.text("model_id"), e.num("weight"), _band(e.obj("band"), default_band)
                )
            )
        rr_o = o.obj("rebalance_range")
        rr = RebalanceRange()
        if rr_o is not None:
            rr_o.no_extra({"kind", "interior_pct"})
            rr = RebalanceRange(
                rr_o.enum("kind", RangeKind, RangeKind.TARGET), rr_o.num("interior_pct", 50.0)
            )
        strategies[sid] = Strategy(sid, tuple(entries_s), rr)
    lists: dict[str, frozenset[str]] = {}
    lo = root.obj("lists")
    if lo is not None:
        for name, members in lo.d.items():
            if not isinstance(members, list) or not all(isinstance(x, str) for x in members):
                raise lo.err(name, "must be a list of symbols")
            lists[name] = frozenset(members)
    eqs = []
    for o in root.items("equivalence_sets"):
        o.no_extra({"set_id", "members", "identical"})
        members = o.lst("members", required=True)
        if not all(isinstance(x, str) for x in members) or len(members) < 2:
            raise o.err("members", "must list at least two symbols")
        eqs.append(EquivalenceSet(o.text("set_id"), tuple(members), o.flag("identical", False)))
    return Reference(secs, models, strategies, lists, tuple(eqs))


def _restrictions(o: _Obj) -> tuple[Restriction, ...]:
    out = []
    for r in o.items("restrictions"):
        r.no_extra({"kind", "scope", "value", "source"})
        kind = r.enum("kind", RestrictionKind, None)
        if kind is None:
            raise r.err("kind", "is required")
        out.append(
            Restriction(
                kind,
                r.enum("scope", RestrictionScope, RestrictionScope.SECURITY),
                r.text("value"),
                r.text("source", "client"),
            )
        )
    return tuple(out)


def _settings(o: _Obj | None) -> Settings:
    if o is None:
        return Settings()
    o.no_extra(
        {
            "min_trade_value",
            "min_trade_shares",
            "min_opening_trade_value",
            "fractional",
            "share_decimals",
            "cash_target",
            "cash_reserve",
            "cash_band",
            "security_band",
            "freed_cash",
        }
    )
    dec = o.num("share_decimals", 3.0)
    if dec != int(dec):
        raise o.err("share_decimals", "must be a whole number")
    return Settings(
        min_trade_value=o.num("min_trade_value", 0.0),
        min_trade_shares=o.num("min_trade_shares", 0.0),
        min_opening_trade_value=o.num("min_opening_trade_value", 0.0),
        fractional=o.flag("fractional", False),
        share_decimals=int(dec),
        cash_target=o.num("cash_target", 0.0),
        cash_reserve=o.num("cash_reserve", 0.0),
        cash_band=_band(o.obj("cash_band"), Band()),
        security_band=_band(o.obj("security_band"), Band()),
        freed_cash=o.enum("freed_cash", FreedCashPolicy, FreedCashPolicy.PRO_RATA),
    )


def account_from_dict(d: Mapping[str, Any], path: str = "account") -> Account:
    o = _Obj(d, path)
    o.no_extra(
        {"account_id", "cash", "restrictions", "strategy_id", "asset_class_band", "sleeves", "tax"}
    )
    aid = o.text("account_id")
    o.account = aid
    sleeves = []
    for so in o.items("sleeves", required=True):
        so.no_extra({"sleeve_id", "model_id", "cash", "holdings", "settings", "restrictions"})
        sid = so.text("sleeve_id")
        so.sleeve = sid
        holdings = []
        for h in so.items("holdings"):
            h.no_extra({"symbol", "quantity", "lots"})
            lots = []
            for lt in h.items("lots"):
                lt.no_extra({"lot_id", "quantity", "cost", "acquired", "replacement"})
                lots.append(
                    TaxLot(
                        lt.text("lot_id"),
                        lt.num("quantity"),
                        lt.num("cost"),
                        lt.text("acquired"),
                        lt.flag("replacement", False),
                    )
                )
            holdings.append(Holding(h.text("symbol"), h.num("quantity"), tuple(lots)))
        sleeves.append(
            Sleeve(
                sid,
                so.text("model_id"),
                so.num("cash", 0.0),
                tuple(holdings),
                _settings(so.obj("settings")),
                _restrictions(so),
            )
        )
    return Account(
        aid,
        tuple(sleeves),
        o.num("cash", 0.0),
        _restrictions(o),
        o.text("strategy_id", required=False),
        _band(o.obj("asset_class_band"), Band(BandKind.ABSOLUTE, 0.05)),
        _tax(o.obj("tax")),
    )


def _tax(o: _Obj | None) -> TaxSettings | None:
    """The account's tax settings (``None``: the rebalance is not tax-aware)."""
    if o is None:
        return None
    o.no_extra(
        {
            "as_of",
            "account_type",
            "method",
            "short_term_rate",
            "long_term_rate",
            "gain_budget",
            "avoid_short_term_gains",
            "harvest",
            "recent_loss_sales",
            "recent_purchases",
        }
    )
    budget = None
    b = o.obj("gain_budget")
    if b is not None:
        b.no_extra({"limit", "realized_to_date", "hard"})
        budget = GainBudgetSetting(
            b.num("limit"), b.num("realized_to_date", 0.0), b.flag("hard", True)
        )
    harvest = None
    h = o.obj("harvest")
    if h is not None:
        h.no_extra({"min_loss_percent", "min_loss_dollars", "schedule", "swap_back"})
        schedule = []
        for e in h.items("schedule"):
            e.no_extra({"from_month", "min_loss_percent", "min_loss_dollars"})
            month = e.num("from_month")
            if month != int(month):
                raise e.err("from_month", "must be a whole number (1-12)")
            schedule.append((int(month), e.num("min_loss_percent"), e.num("min_loss_dollars")))
        harvest = HarvestSettings(
            h.num("min_loss_percent", 10.0),
            h.num("min_loss_dollars", 100.0),
            tuple(schedule),
            h.flag("swap_back", False),
        )
    sales = []
    for e in o.items("recent_loss_sales"):
        e.no_extra({"symbol", "sold_on", "quantity", "loss_per_share"})
        sales.append(
            LossSale(
                e.text("symbol"), e.text("sold_on"), e.num("quantity"), e.num("loss_per_share", 0.0)
            )
        )
    buys = []
    for e in o.items("recent_purchases"):
        e.no_extra({"symbol", "acquired", "quantity", "purchase_id"})
        buys.append(
            RecentPurchase(
                e.text("symbol"),
                e.text("acquired"),
                e.num("quantity"),
                e.text("purchase_id", "", required=False),
            )
        )
    return TaxSettings(
        as_of=o.text("as_of"),
        account_type=o.text("account_type", "taxable"),
        method=_relief_method(o),
        short_term_rate=o.num("short_term_rate", 0.37),
        long_term_rate=o.num("long_term_rate", 0.20),
        gain_budget=budget,
        avoid_short_term_gains=o.flag("avoid_short_term_gains", False),
        harvest=harvest,
        recent_loss_sales=tuple(sales),
        recent_purchases=tuple(buys),
    )


# Spellings of earlier files, still read (files are written with the current ones).
_FORMER_RELIEF_METHODS = {"min_tax": ReliefMethod.MINTAX}


def _relief_method(o: _Obj) -> ReliefMethod:
    """The account's relief method; ``min_tax`` (files written before it was ``mintax``)
    reads as ``mintax``, so stored scenarios replay to the same trades."""
    name = o.text("method", DEFAULT_RELIEF_METHOD.value)
    if name in _FORMER_RELIEF_METHODS:
        return _FORMER_RELIEF_METHODS[name]
    try:
        return ReliefMethod(name)
    except ValueError:
        raise o.err(
            "method", f"must be one of {', '.join(RELIEF_METHOD_NAMES)}, got {name!r}"
        ) from None


def request_from_dict(d: Mapping[str, Any] | None) -> Request:
    if d is None:
        return Request()
    o = _Obj(d, "request")
    o.no_extra({"kind", "amount", "scope"})
    return Request(
        o.enum("kind", RequestKind, RequestKind.REBALANCE),
        o.num("amount", 0.0),
        o.enum("scope", Scope, Scope.AUTO),
    )


_REF_KEYS = {"securities", "models", "strategies", "lists", "equivalence_sets"}


def _check_format(d: Any, expected: str) -> None:
    root = _Obj(d, "")
    fmt = root.d.get("format", expected)
    if fmt != expected:
        raise root.err("format", f"must be {expected!r}, got {fmt!r}")


def scenario_from_dict(d: Mapping[str, Any]) -> RebalanceInput:
    """Build a ``RebalanceInput`` from a scenario dict (parsed JSON)."""
    _check_format(d, SCENARIO_FORMAT)
    _Obj(d, "").no_extra(_REF_KEYS | {"format", "account", "request", "description"})
    if "account" not in d:
        raise ScenarioFormatError("is required", field="account")
    return RebalanceInput(
        account_from_dict(d["account"]), reference_from_dict(d), request_from_dict(d.get("request"))
    )


def book_from_dict(d: Mapping[str, Any]) -> Book:
    """Build a ``Book`` from a book dict (parsed JSON)."""
    _check_format(d, BOOK_FORMAT)
    root = _Obj(d, "")
    root.no_extra(_REF_KEYS | {"format", "accounts", "request", "description"})
    accounts = tuple(
        account_from_dict(a, f"accounts[{i}]")
        for i, a in enumerate(root.lst("accounts", required=True))
    )
    return Book(reference_from_dict(d), accounts, request_from_dict(d.get("request")))


def load(path: str | Path) -> RebalanceInput | Book:
    """Read a scenario or a book file (decided by its ``format``, or by ``accounts``)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ScenarioFormatError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}"
        ) from None
    if isinstance(data, Mapping) and (data.get("format") == BOOK_FORMAT or "accounts" in data):
        return book_from_dict(data)
    return scenario_from_dict(data)


# --------------------------------------------------------------------------------------------
# Writing


def _band_d(b: Band) -> dict[str, Any]:
    return {"kind": b.kind.value, "width": b.width}


def reference_to_dict(ref: Reference) -> dict[str, Any]:
    return {
        "securities": [
            {
                "symbol": s.symbol,
                "price": s.price,
                "asset_class": s.asset_class,
                "sector": s.sector,
                "fractional": s.fractional,
            }
            for s in ref.securities.values()
        ],
        "models": [
            {
                "model_id": m.model_id,
                "kind": m.kind,
                "cash_weight": m.cash_weight,
                "cash": m.cash,
                "entries": [
                    {
                        "symbol": e.symbol,
                        "weight": e.weight,
                        "shares": e.shares,
                        "hold": e.hold,
                        "replacement": e.replacement,
                        "band": None if e.band is None else _band_d(e.band),
                    }
                    for e in m.entries
                ],
            }
            for m in ref.models.values()
        ],
        "strategies": [
            {
                "strategy_id": s.strategy_id,
                "rebalance_range": {
                    "kind": s.rebalance_range.kind.value,
                    "interior_pct": s.rebalance_range.interior_pct,
                },
                "entries": [
                    {"model_id": e.model_id, "weight": e.weight, "band": _band_d(e.band)}
                    for e in s.entries
                ],
            }
            for s in ref.strategies.values()
        ],
        "lists": {k: sorted(v) for k, v in ref.lists.items()},
        "equivalence_sets": [
            {"set_id": e.set_id, "members": list(e.members)}
            | ({"identical": True} if e.identical else {})
            for e in ref.equivalence_sets
        ],
    }


def _restr_d(rs: tuple[Restriction, ...]) -> list[dict[str, Any]]:
    return [
        {"kind": r.kind.value, "scope": r.scope.value, "value": r.value, "source": r.source}
        for r in rs
    ]


def _settings_d(s: Settings) -> dict[str, Any]:
    return {
        "min_trade_value": s.min_trade_value,
        "min_trade_shares": s.min_trade_shares,
        "min_opening_trade_value": s.min_opening_trade_value,
        "fractional": s.fractional,
        "share_decimals": s.share_decimals,
        "cash_target": s.cash_target,
        "cash_reserve": s.cash_reserve,
        "cash_band": _band_d(s.cash_band),
        "security_band": _band_d(s.security_band),
        "freed_cash": s.freed_cash.value,
    }


def tax_to_dict(t: TaxSettings) -> dict[str, Any]:
    d: dict[str, Any] = {
        "as_of": t.as_of,
        "account_type": t.account_type,
        "method": str(t.method),
        "short_term_rate": t.short_term_rate,
        "long_term_rate": t.long_term_rate,
        "avoid_short_term_gains": t.avoid_short_term_gains,
        "recent_loss_sales": [
            {
                "symbol": x.symbol,
                "sold_on": x.sold_on,
                "quantity": x.quantity,
                "loss_per_share": x.loss_per_share,
            }
            for x in t.recent_loss_sales
        ],
        "recent_purchases": [
            {"symbol": x.symbol, "acquired": x.acquired, "quantity": x.quantity}
            | ({"purchase_id": x.purchase_id} if x.purchase_id else {})
            for x in t.recent_purchases
        ],
    }
    if t.gain_budget is not None:
        b = t.gain_budget
        d["gain_budget"] = {
            "limit": b.limit,
            "realized_to_date": b.realized_to_date,
            "hard": b.hard,
        }
    if t.harvest is not None:
        h = t.harvest
        d["harvest"] = {
            "min_loss_percent": h.min_loss_percent,
            "min_loss_dollars": h.min_loss_dollars,
            "swap_back": h.swap_back,
            "schedule": [
                {"from_month": m, "min_loss_percent": p, "min_loss_dollars": x}
                for m, p, x in h.schedule
            ],
        }
    return d


def account_to_dict(a: Account) -> dict[str, Any]:
    d = _account_d(a)
    if a.tax is not None:  # written only when set: files of other accounts are unchanged
        d["tax"] = tax_to_dict(a.tax)
    return d


def _account_d(a: Account) -> dict[str, Any]:
    return {
        "account_id": a.account_id,
        "cash": a.cash,
        "strategy_id": a.strategy_id,
        "asset_class_band": _band_d(a.asset_class_band),
        "restrictions": _restr_d(a.restrictions),
        "sleeves": [
            {
                "sleeve_id": s.sleeve_id,
                "model_id": s.model_id,
                "cash": s.cash,
                "settings": _settings_d(s.settings),
                "restrictions": _restr_d(s.restrictions),
                "holdings": [
                    {"symbol": h.symbol, "quantity": h.quantity, "lots": _lots_d(h.lots)}
                    for h in s.holdings
                ],
            }
            for s in a.sleeves
        ],
    }


def _lots_d(lots: tuple[TaxLot, ...]) -> list[dict[str, Any]]:
    # one dict per lot, ``replacement`` only when set (a book writes hundreds of thousands)
    return [
        {
            "lot_id": lt.lot_id,
            "quantity": lt.quantity,
            "cost": lt.cost,
            "acquired": lt.acquired,
            "replacement": True,
        }
        if lt.replacement
        else {
            "lot_id": lt.lot_id,
            "quantity": lt.quantity,
            "cost": lt.cost,
            "acquired": lt.acquired,
        }
        for lt in lots
    ]


def request_to_dict(r: Request) -> dict[str, Any]:
    return {"kind": r.kind.value, "amount": r.amount, "scope": r.scope.value}


def scenario_to_dict(inp: RebalanceInput) -> dict[str, Any]:
    """The scenario dict of a ``RebalanceInput`` (``scenario_from_dict`` reads it back equal)."""
    return {
        "format": SCENARIO_FORMAT,
        **reference_to_dict(inp.reference),
        "account": account_to_dict(inp.account),
        "request": request_to_dict(inp.request),
    }


def book_to_dict(book: Book) -> dict[str, Any]:
    return {
        "format": BOOK_FORMAT,
        **reference_to_dict(book.reference),
        "accounts": [account_to_dict(a) for a in book.accounts],
        "request": request_to_dict(book.request),
    }
