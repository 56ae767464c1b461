"""Between rebalance-svc's read model and the pure engine: build the engine's inputs (accounts
with their own settings, restrictions, sleeves and tax lots; the shared reference) and turn
its results into the pieces of drift-detected and trades-proposed. No I/O.

A UMA's holdings are split into sleeves (taxlot-svc keeps one position per symbol) by the
engine's rule (`ballast_engine.sleeves`: a lot's own sleeve, else the home sleeve of the
symbol); a sleeve's holding carries its lots only when they add up to its shares. A drift
scan reads no lots, only the shares the lots put in each sleeve (`PositionRow.sleeve_shares`),
so it splits a position as a proposal does.
A UMA's cash is each sleeve's own as the book of record keeps it (holdings-reconciled's
`sleeve_cash`); the account's own cash, and that of a sleeve the strategy no longer has, is
unallocated account cash. When the book sent no cash per sleeve, the whole cash arrives as
unallocated account cash. The strategic rebalance hands unallocated cash to the sleeves
(every movement recorded).

Tax-aware: an account whose book of record sent tax lots (holdings-reconciled v2) is
rebalanced tax-aware (`engine_tax`): sells name their lots in the account's relief method and
carry their estimated tax, with its gain budget, short-term-gain and wash-sale rules.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any, NamedTuple, cast, get_args

import numpy as np
from ballast_common.contracts.events import (
    CashMovementPurpose,
    CashMovementV1,
    LossSaleV1,
    ProposalMetricsV1,
    TaxSettingsV1,
)
from ballast_engine.drift import LEVELS, BookArrays, DriftScan
from ballast_engine.model import (
    Account,
    Band,
    BandKind,
    CashMovement,
    DriftLevel,
    EquivalenceSet,
    FreedCashPolicy,
    GainBudgetSetting,
    HarvestSettings,
    Holding,
    LossSale,
    Model,
    ModelEntry,
    RangeKind,
    RebalanceRange,
    RebalanceResult,
    RecentPurchase,
    Reference,
    Restriction,
    RestrictionKind,
    RestrictionScope,
    Security,
    Settings,
    Sleeve,
    Strategy,
    StrategyEntry,
    TaxLot,
    TaxSettings,
)
from ballast_engine.sleeves import SleeveModel, equivalents_by_symbol, split_position
from ballast_engine.tax.model import WASH_WINDOW_DAYS
from pydantic_core import to_json

SLEEVE = "main"  # the one sleeve of an SMA
WEIGHT = Decimal("0.000001")
LOT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SecurityRow:
    symbol: str
    price: Decimal | None
    asset_class: str
    sector: str
    fractional_eligible: bool


@dataclass(frozen=True)
class EquivalenceSetRow:
    """A live equivalence set of the read model."""

    set_id: str
    members: tuple[str, ...]
    identical: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """What a model-changed set besides the weights: the model's kind (weights or shares),
    the manager's settings per target (shares, hold, replacement, band, tax_loss_proxies, as
    the read model keeps them: only those set) and swap-back."""

    kind: str = "weights"
    target_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    swap_back: bool = False
    direct_index: Mapping[str, Any] | None = None  # direct_index.direct_index_doc


PROXY_SET_PREFIX = "proxies:"  # model-hub-svc's set ids have no ':', so these never clash


@dataclass(frozen=True)
class Defaults:
    """The service's settings (REBALANCE_SVC_*): what an account that set nothing gets."""

    min_trade_value: Decimal
    security_tolerance: Decimal
    cash_band: Decimal


@dataclass(frozen=True)
class SleeveRow:
    sleeve_id: str
    model_id: str
    weight: Decimal
    band_kind: str
    band_width: Decimal


@dataclass(frozen=True)
class AccountRow:
    """One account of the read model, as plain data."""

    account_id: str
    model_id: str | None
    rebalance_settings: Mapping[str, Any] = field(default_factory=dict)
    restrictions: Sequence[Mapping[str, Any]] = ()
    sleeves: tuple[SleeveRow, ...] = ()
    rebalance_range: str | None = None
    interior_pct: Decimal | None = None

    @property
    def is_uma(self) -> bool:
        return bool(self.sleeves)

    def model_ids(self) -> list[str]:
        if self.sleeves:
            return [s.model_id for s in self.sleeves]
        return [self.model_id] if self.model_id else []


class PositionRow(NamedTuple):
    """A position of the read model: its lots as the book of record sent them (LotV1), or,
    where the lots were not read (a drift scan), the shares they hold per sleeve named."""

    symbol: str
    quantity: Decimal
    lots: Sequence[Mapping[str, Any]] = ()
    sleeve_shares: Sequence[tuple[str, Decimal]] = ()


@dataclass(frozen=True)
class TaxContext:
    """What tax-aware rebalancing needs beyond the lots: the account's tax settings and the
    household's recent loss sales (wash-sale window)."""

    account_id: str
    account_type: str | None
    household_id: str | None
    settings: TaxSettingsV1
    recent_loss_sales: tuple[LossSaleV1, ...] = ()


# --------------------------------------------------------------------------------------------
# Reference


def equivalence_sets_for(
    sets: Iterable[EquivalenceSetRow], securities: Mapping[str, SecurityRow]
) -> tuple[tuple[EquivalenceSet, ...], list[str]]:
    """The engine's equivalence sets from the live sets, newest first, and what had to be
    left out (one sentence each), so that one bad set never fails the whole book:
    - a member missing from the security master is left out of its set;
    - a member already claimed by a newer set is left out of the older one (the engine allows
      one set per security; model-hub-svc enforces it, but a member moving between two sets
      is two events on two keys that may arrive in either order);
    - a set left with fewer than two members substitutes nothing and is left out.
    The engine's sets are sorted by id (same read model, same reference)."""
    claimed: dict[str, str] = {}
    out: list[EquivalenceSet] = []
    problems: list[str] = []
    for s in sets:
        members: list[str] = []
        for symbol in dict.fromkeys(s.members):
            if symbol not in securities:
                problems.append(
                    f"equivalence set {s.set_id}: {symbol} is not in the security master; "
                    "left out of the set"
                )
            elif symbol in claimed:
                problems.append(
                    f"equivalence set {s.set_id}: {symbol} is also in the newer set "
                    f"{claimed[symbol]}; left out of {s.set_id}"
                )
            else:
                members.append(symbol)
        if len(members) < 2:
            if len(members) < len(s.members):
                problems.append(
                    f"equivalence set {s.set_id}: fewer than two usable members; set left out"
                )
            continue
        for symbol in members:
            claimed[symbol] = s.set_id
        out.append(EquivalenceSet(s.set_id, tuple(sorted(members)), s.identical))
    return tuple(sorted(out, key=lambda e: e.set_id)), problems


def proxy_sets_for(
    specs: Mapping[str, ModelSpec],
    models: Mapping[str, Mapping[str, Decimal]],
    securities: Mapping[str, SecurityRow],
    taken: Iterable[EquivalenceSet],
) -> tuple[tuple[EquivalenceSet, ...], list[str]]:
    """The models' tax-loss proxies as the engine's harvest replacements: per model target
    with proxies, a set (not identical) of the target and its proxies, `proxies:<model>:<symbol>`,
    and what had to be left out (one sentence each). A security stays in one set: the
    equivalence sets already `taken` (model-hub-svc's) keep theirs, then models in id order,
    targets in symbol order; a proxy unknown to the security master, already in a set or a
    target of the same model (`models`: a set would merge the two targets) is left out, and
    a set whose target is already in one (or with no proxy left) is left out."""
    claimed = {m: e.set_id for e in taken for m in e.members}
    out: list[EquivalenceSet] = []
    problems: list[str] = []
    for model_id in sorted(specs):
        settings = specs[model_id].target_settings
        targets = models.get(model_id, {})
        for symbol in sorted(settings):
            proxies = settings[symbol].get("tax_loss_proxies") or ()
            if not proxies:
                continue
            set_id = f"{PROXY_SET_PREFIX}{model_id}:{symbol}"
            if symbol in claimed:
                problems.append(
                    f"model {model_id}: the tax-loss proxies of {symbol} are left out: {symbol} "
                    f"is in the equivalence set {claimed[symbol]}, whose members replace it"
                )
                continue
            members = [symbol]
            for proxy in dict.fromkeys(proxies):
                if proxy not in securities:
                    problems.append(
                        f"model {model_id}: tax-loss proxy {proxy} of {symbol} is not in the "
                        "security master; left out"
                    )
                elif proxy in targets:
                    problems.append(
                        f"model {model_id}: tax-loss proxy {proxy} of {symbol} is a target of "
                        "the model too; left out (a set would merge the two targets)"
                    )
                elif proxy in claimed:
                    problems.append(
                        f"model {model_id}: tax-loss proxy {proxy} of {symbol} is already in "
                        f"the set {claimed[proxy]}; left out of {set_id}"
                    )
                else:
                    members.append(proxy)
            if len(members) < 2:
                continue
            for member in members:
                claimed[member] = set_id
            out.append(EquivalenceSet(set_id, tuple(members), identical=False))
    return tuple(out), problems


def engine_model(model_id: str, targets: Mapping[str, Decimal], spec: ModelSpec) -> Model:
    """The engine's model: its targets in symbol order, with the manager's settings of each
    (shares of a share-based model, hold and its buy-list replacement, the security's own
    band)."""
    entries = []
    for symbol, weight in sorted(targets.items()):
        s = spec.target_settings.get(symbol)
        if not s:
            entries.append(ModelEntry(symbol, float(weight)))
            continue
        band = s.get("band")
        entries.append(
            ModelEntry(
                symbol,
                float(weight),
                shares=float(s.get("shares") or 0),
                hold=bool(s.get("hold", False)),
                replacement=s.get("replacement"),
                band=_band(band.get("kind", "absolute"), band["width"]) if band else None,
            )
        )
    return Model(model_id, tuple(entries), kind=spec.kind)


_PLAIN_WEIGHTS = ModelSpec()


def reference_for(
    securities: Mapping[str, SecurityRow],
    models: Mapping[str, Mapping[str, Decimal]],
    strategies: Iterable[Strategy] = (),
    lists: Mapping[str, Iterable[str]] | None = None,
    equivalence_sets: Iterable[EquivalenceSet] = (),
    specs: Mapping[str, ModelSpec] | None = None,
) -> Reference:
    """The securities the engine may price, the models (id -> symbol -> weight, with the
    manager's settings of `specs`: none, a plain weight model), the UMAs' strategies, the
    named security lists restrictions refer to and the equivalence sets (already filtered by
    `equivalence_sets_for`, the models' proxies by `proxy_sets_for`)."""
    specs = specs or {}
    return Reference(
        securities={
            s.symbol: Security(
                s.symbol,
                float(s.price) if s.price is not None else None,
                s.asset_class,
                s.sector,
                s.fractional_eligible,
            )
            for s in securities.values()
        },
        models={
            model_id: engine_model(model_id, targets, specs.get(model_id, _PLAIN_WEIGHTS))
            for model_id, targets in models.items()
        },
        strategies={s.strategy_id: s for s in strategies},
        lists={name: frozenset(symbols) for name, symbols in (lists or {}).items()},
        equivalence_sets=tuple(equivalence_sets),
    )


def strategy_for(account: AccountRow) -> Strategy:
    """A UMA's strategy (its id is the account id)."""
    kind = RangeKind(account.rebalance_range or RangeKind.TARGET.value)
    return Strategy(
        account.account_id,
        tuple(
            StrategyEntry(s.model_id, float(s.weight), _band(s.band_kind, s.band_width))
            for s in account.sleeves
        ),
        RebalanceRange(
            kind, float(account.interior_pct) if account.interior_pct is not None else 50.0
        ),
    )


# --------------------------------------------------------------------------------------------
# Accounts


def engine_settings(doc: Mapping[str, Any], defaults: Defaults) -> Settings:
    """The account's rebalance settings; a missing or null field takes the service default
    (REBALANCE_SVC_*) or, where the service has none, the engine's."""

    def get(name: str, fallback: Any) -> Any:
        value = doc.get(name)
        return fallback if value is None else value

    def band(name: str, width: Decimal) -> Band:
        b = doc.get(name)
        if b is None:
            return Band(BandKind.ABSOLUTE, float(width))
        return _band(b.get("kind", "absolute"), b["width"])

    return Settings(
        min_trade_value=float(get("min_trade_value", defaults.min_trade_value)),
        min_trade_shares=float(get("min_trade_shares", 0)),
        min_opening_trade_value=float(get("min_opening_trade_value", 0)),
        fractional=bool(get("fractional", False)),
        share_decimals=int(get("share_decimals", 3)),
        cash_target=float(get("cash_target", 0)),
        cash_reserve=float(get("cash_reserve", 0)),
        cash_band=band("cash_band", defaults.cash_band),
        security_band=band("security_band", defaults.security_tolerance),
        freed_cash=FreedCashPolicy(get("freed_cash", FreedCashPolicy.PRO_RATA.value)),
    )


def engine_restrictions(docs: Iterable[Mapping[str, Any]]) -> tuple[Restriction, ...]:
    return tuple(
        Restriction(
            RestrictionKind(d["kind"]),
            RestrictionScope(d["scope"]),
            d["value"],
            d.get("source") or "client",
        )
        for d in docs
    )


def tax_lots(lots: Iterable[Mapping[str, Any]]) -> tuple[TaxLot, ...]:
    """The engine's lots (lot_id, quantity, cost, acquired, replacement) of LotV1 dicts; a
    lot with a wash-sale adjustment in its basis is a replacement."""
    return tuple(
        TaxLot(
            str(lot["lot_id"]),
            float(lot["quantity"]),
            float(lot["cost_basis"]),
            str(lot["acquired"]),
            _adjusted(lot.get("wash_adjustment")),
        )
        for lot in lots
    )


_NO_ADJUSTMENT = frozenset({"0.00", "0", "0.0"})  # how the book of record writes none


def _adjusted(wash_adjustment: Any) -> bool:
    if not wash_adjustment or wash_adjustment in _NO_ADJUSTMENT:
        return False
    return bool(Decimal(str(wash_adjustment)))


def engine_account(
    account: AccountRow,
    cash: Decimal,
    positions: Iterable[PositionRow],
    defaults: Defaults,
    model_symbols: Mapping[str, Iterable[str]],
    equivalence_sets: Iterable[EquivalenceSet] = (),
    tax: TaxSettings | None = None,
    sleeve_cash: Sequence[Mapping[str, Any]] | None = None,
) -> Account:
    """An SMA (one sleeve on its model, with the account's cash) or a UMA (one sleeve per
    strategy model, holdings split by the rule above, cash per sleeve by `uma_cash`), each
    sleeve with the account's settings, the account's restrictions, and tax lots where they
    add up."""
    settings = engine_settings(account.rebalance_settings, defaults)
    restrictions = engine_restrictions(account.restrictions)
    if not account.is_uma:
        holdings = tuple(
            _holding(p.symbol, p.quantity, p.lots)
            for p in sorted(positions, key=_symbol)
            if p.quantity
        )
        sleeve = Sleeve(
            SLEEVE, account.model_id or "", cash=float(cash), holdings=holdings, settings=settings
        )
        return Account(account.account_id, (sleeve,), restrictions=restrictions, tax=tax)
    split = split_holdings(account.sleeves, positions, model_symbols, equivalence_sets)
    own_cash, unallocated = uma_cash(account.sleeves, cash, sleeve_cash)
    sleeves = tuple(
        Sleeve(
            s.sleeve_id,
            s.model_id,
            cash=float(own_cash.get(s.sleeve_id, 0)),
            holdings=tuple(split.get(s.sleeve_id, ())),
            settings=settings,
        )
        for s in account.sleeves
    )
    return Account(
        account.account_id,
        sleeves,
        cash=float(unallocated),
        restrictions=restrictions,
        strategy_id=account.account_id,
        tax=tax,
    )


def uma_cash(
    sleeves: Sequence[SleeveRow], cash: Decimal, sleeve_cash: Sequence[Mapping[str, Any]] | None
) -> tuple[dict[str, Decimal], Decimal]:
    """A UMA's cash: each strategy sleeve's own, as the book of record keeps it
    (`sleeve_cash`: sleeve_id, amount; adding up to `cash`), and the unallocated rest (the
    account's own, and any sleeve the strategy does not have). Without `sleeve_cash`, all of
    `cash` is unallocated."""
    ids = {s.sleeve_id for s in sleeves}
    own: dict[str, Decimal] = {}
    for part in sleeve_cash or ():
        sleeve_id = part.get("sleeve_id")
        if sleeve_id in ids:
            own[sleeve_id] = own.get(sleeve_id, Decimal(0)) + Decimal(str(part["amount"]))
    return own, cash - sum(own.values(), Decimal(0))


def split_holdings(
    sleeves: Sequence[SleeveRow],
    positions: Iterable[PositionRow],
    model_symbols: Mapping[str, Iterable[str]],
    equivalence_sets: Iterable[EquivalenceSet] = (),
) -> dict[str, list[Holding]]:
    """A UMA's positions per sleeve, by the engine's rule (`ballast_engine.sleeves`)."""
    models = [
        SleeveModel(s.sleeve_id, frozenset(model_symbols.get(s.model_id, ()))) for s in sleeves
    ]
    equivalents = equivalents_by_symbol(equivalence_sets)
    out: dict[str, list[Holding]] = defaultdict(list)
    for p in sorted(positions, key=_symbol):
        lot_sleeves: Sequence[tuple[str | None, Decimal]] = p.sleeve_shares or [
            (lot.get("sleeve_id"), Decimal(str(lot["quantity"]))) for lot in p.lots
        ]
        for part in split_position(p.symbol, p.quantity, lot_sleeves, models, equivalents):
            lots = [] if p.sleeve_shares else [p.lots[i] for i in part.lots]
            out[part.sleeve_id].append(_holding(p.symbol, part.shares, lots))
    return out


def tax_context(
    account_id: str,
    account_type: str | None,
    household_id: str | None,
    tax_settings: Mapping[str, Any] | None,
    loss_sales: Iterable[LossSaleV1],
) -> TaxContext:
    sales = sorted(
        set(loss_sales), key=lambda s: (s.sold_on, s.symbol, s.quantity, s.loss_per_share)
    )
    return TaxContext(
        account_id,
        account_type,
        household_id,
        TaxSettingsV1.model_validate(tax_settings or {}),
        tuple(sales),
    )


WASH_WINDOW = timedelta(days=WASH_WINDOW_DAYS)


def recent_purchases(
    household_lots: Iterable[tuple[str, str, str, Sequence[Mapping[str, Any]]]], as_of: date
) -> dict[str, list[tuple[str, RecentPurchase]]]:
    """Per household, the purchases of the last 30 days before trade date `as_of` (account,
    purchase) from its accounts' lots (`household_lots`: household, account, symbol, lots),
    worked out once for all its accounts. Replacement lots (a wash-sale adjustment) wash
    nothing more, so they are not recent purchases."""
    out: dict[str, list[tuple[str, RecentPurchase]]] = defaultdict(list)
    since = as_of - WASH_WINDOW
    for household_id, account_id, symbol, lots in household_lots:
        for lot in lots:
            acquired = str(lot["acquired"])
            if not _adjusted(lot.get("wash_adjustment")) and (
                since <= date.fromisoformat(acquired) <= as_of
            ):
                purchase = RecentPurchase(
                    symbol, acquired, float(lot["quantity"]), str(lot["lot_id"])
                )
                out[household_id].append((account_id, purchase))
    return out


def engine_tax(
    ctx: TaxContext,
    as_of: date,
    realized: tuple[int, Decimal, Decimal] | None,
    household_purchases: Iterable[tuple[str, RecentPurchase]] = (),
    swap_back: bool = False,
) -> TaxSettings:
    """The engine's tax settings of an account on trade date `as_of`: its method and rates,
    its yearly gain budget less what it realized this year, harvest thresholds (and
    `swap_back`: its models ask for it, `swap_back_of`), the household's recent loss sales,
    and purchases of the last 30 days in the household's other accounts
    (`household_purchases`: account, purchase, from `recent_purchases`)."""
    s = ctx.settings
    budget = None
    if s.gain_budget is not None:
        so_far = realized[1] + realized[2] if realized and realized[0] == as_of.year else 0
        budget = GainBudgetSetting(
            float(s.gain_budget), float(so_far), hard=s.gain_budget_mode == "hard"
        )
    harvest = (
        HarvestSettings(
            float(s.harvest_min_loss_percent),
            float(s.harvest_min_loss_dollars),
            swap_back=swap_back,
        )
        if s.harvest
        else None
    )
    purchases = tuple(p for account_id, p in household_purchases if account_id != ctx.account_id)
    return TaxSettings(
        as_of=as_of.isoformat(),
        account_type=ctx.account_type or "taxable",
        method=s.relief_method,
        short_term_rate=float(s.short_term_rate),
        long_term_rate=float(s.long_term_rate),
        gain_budget=budget,
        avoid_short_term_gains=s.avoid_short_term_gains,
        harvest=harvest,
        recent_loss_sales=tuple(
            LossSale(x.symbol, x.sold_on.isoformat(), float(x.quantity), float(x.loss_per_share))
            for x in ctx.recent_loss_sales
            if x.sold_on >= as_of - WASH_WINDOW
        ),
        recent_purchases=purchases,
    )


def swap_back_of(model_ids: Sequence[str], specs: Mapping[str, ModelSpec]) -> bool:
    """Whether an account's harvests swap proxies back after the wash-sale window: its
    models ask for it (a UMA's: every sleeve's model, as the engine swaps back per account).
    An account has no swap-back setting of its own (TaxSettingsV1 has none)."""
    return bool(model_ids) and all(specs.get(m, _PLAIN_WEIGHTS).swap_back for m in model_ids)


def loss_sale(symbol: str, sold_on: date, quantity: Decimal, loss: Decimal) -> LossSaleV1:
    return LossSaleV1(symbol=symbol, sold_on=sold_on, quantity=quantity, loss_per_share=loss)


def cash_movements(result: RebalanceResult) -> list[CashMovementV1]:
    """The cash a UMA's strategic rebalance moves inside the account (trades-proposed's
    `cash_movements`): between two sleeves, or between a sleeve and the account's own cash
    (null). A withdrawal paid from a sleeve is gathered in the account's own cash, from where
    it is paid out (the payout is no move inside the account); one paid from the account's
    own cash moves nothing inside it and is left out."""
    return [
        CashMovementV1(
            from_sleeve=m.from_sleeve,
            to_sleeve=m.to_sleeve,
            amount=m.amount,
            purpose=cast(CashMovementPurpose, m.purpose),
        )
        for m in _moves_inside(result)
    ]


def _moves_inside(result: RebalanceResult) -> list[CashMovement]:
    return [m for m in result.cash_movements if m.from_sleeve != m.to_sleeve and m.amount > 0]


_PURPOSES = frozenset(get_args(CashMovementPurpose))


def run_label(row: AccountRow, model_versions: Mapping[str, int]) -> tuple[str, int]:
    """The model (id, version) an account's events of a run name: an SMA's model; a UMA's
    largest sleeve's."""
    if row.is_uma:
        model_id = max(row.sleeves, key=lambda s: s.weight).model_id
    else:
        model_id = row.model_id or ""
    return model_id, model_versions[model_id]


@dataclass(frozen=True)
class ProposalExtras:
    """What a proposal carries besides the engine's result: a direct-index sleeve's yearly
    tracking errors (fractions) and the optimizer's notes."""

    tracking_error_before: float | None = None
    tracking_error_after: float | None = None
    notes: tuple[str, ...] = ()


def proposal_json(
    proposal_id: str,
    run_id: uuid.UUID,
    label: tuple[str, int],
    result: RebalanceResult,
    trade_ids: Sequence[str],
    uma: bool,
    extras: ProposalExtras | None = None,
) -> bytes:
    """trades-proposed's payload for a result with trades, byte for byte as
    `TradesProposedV1` serializes it (a test holds the two to the same bytes), written from
    plain values by the models' own JSON writer, without a model per trade. The contract's
    rules on the values are checked here (a ValueError names the trade and field)."""
    trades = []
    for t, trade_id in zip(result.trades, trade_ids, strict=True):
        price = _price_text(t.price)
        if not (t.quantity > 0 and price is not None and t.estimated_value >= 0):
            raise ValueError(
                f"trade {t.side._value_} {t.symbol} of account {result.account_id}: quantity "
                f"{t.quantity} and estimated_price {money(t.price)} must be > 0, "
                f"estimated_value {t.estimated_value} >= 0"
            )
        tax = t.estimated_tax
        trades.append(
            {
                "trade_id": trade_id,
                "symbol": t.symbol,
                "side": t.side._value_,
                "quantity": _decimal_text(t.quantity),
                "estimated_price": price,
                "estimated_value": _decimal_text(t.estimated_value),
                "reason": t.reason._value_,
                "explanation": t.explanation,
                "sleeve_id": t.sleeve_id if uma else None,
                "lot_ids": [lot.lot_id for lot in t.lots],
                "estimated_tax": None if tax is None else _decimal_text(tax),
            }
        )
    if not trades:
        raise ValueError(f"a proposal of account {result.account_id} has no trades")
    moves = []
    for m in _moves_inside(result) if uma else ():
        if m.purpose not in _PURPOSES:
            raise ValueError(f"cash movement purpose {m.purpose!r} is not one of {_PURPOSES}")
        moves.append(
            {
                "from_sleeve": m.from_sleeve,
                "to_sleeve": m.to_sleeve,
                "amount": _decimal_text(m.amount),
                "purpose": m.purpose,
            }
        )
    summary = result.summary
    metrics = proposal_metrics(result, extras)
    notes = [n.message for n in result.notices] + list(extras.notes if extras else ())
    return to_json(
        {
            "proposal_id": proposal_id,
            "run_id": str(run_id),
            "account_id": result.account_id,
            "model_id": label[0],
            "model_version": int(label[1]),
            "trades": trades,
            "cash_before": _decimal_text(summary.cash_before),
            "cash_after_estimated": _decimal_text(summary.cash_after),
            "cash_movements": moves,
            "metrics": metrics.model_dump(mode="json"),
            "notes": notes,
        }
    )


CENT = Decimal("0.01")
PERCENT_PLACES = Decimal("0.0001")
HUNDRED = Decimal(100)


def proposal_metrics(
    result: RebalanceResult, extras: ProposalExtras | None = None
) -> ProposalMetricsV1:
    """A proposal's figures from what the engine had: the account's value before the trades
    (holdings at estimated prices and cash), buys and sells, turnover ((buy + sell) / (2 x
    value)), the sells' estimated tax, and the largest security drift before and (estimated)
    after the trades, as the engine's drift reports measure it (their security level, which
    drift-detected's `max_abs_drift` also is; the engine's summary has it without building
    the reports). Money in cents, percents to 4 decimals, half up."""
    summary = result.summary
    value = summary.account_value.quantize(CENT, ROUND_HALF_UP)
    buys = summary.buy_value.quantize(CENT, ROUND_HALF_UP)
    sells = summary.sell_value.quantize(CENT, ROUND_HALF_UP)
    taxes = [t.estimated_tax for t in result.trades if t.estimated_tax is not None]
    turnover = (buys + sells) / (2 * value) * HUNDRED if value > 0 else Decimal(0)
    return ProposalMetricsV1(
        account_value=value,
        buy_value=buys,
        sell_value=sells,
        turnover_percent=_percent(turnover),
        estimated_tax=sum(taxes, Decimal(0)).quantize(CENT, ROUND_HALF_UP),
        drift_before_percent=_percent(Decimal(summary.max_security_drift_before) * HUNDRED),
        drift_after_percent=_percent(Decimal(summary.max_security_drift_after) * HUNDRED),
        tracking_error_before_percent=_tracking(extras.tracking_error_before if extras else None),
        tracking_error_after_percent=_tracking(extras.tracking_error_after if extras else None),
    )


def _tracking(fraction: float | None) -> Decimal | None:
    """A yearly tracking error (a fraction) as the contract's percent (None: not known)."""
    if fraction is None or not math.isfinite(fraction):
        return None
    return _percent(Decimal(repr(fraction)) * HUNDRED)


def _percent(value: Decimal) -> Decimal:
    """A percent as the contract carries it: 4 decimals, half up, within 0-100 (a turnover
    or a weight can pass 100 only when negative cash makes the account's value small)."""
    return min(max(value, Decimal(0)), HUNDRED).quantize(PERCENT_PLACES, ROUND_HALF_UP)


def _holding(symbol: str, quantity: Decimal, lots: Sequence[Mapping[str, Any]]) -> Holding:
    q = float(quantity)
    engine_lots = tax_lots(lots)
    total = sum(lot.quantity for lot in engine_lots)
    if not engine_lots or abs(total - q) > LOT_TOLERANCE * max(1.0, q):
        engine_lots = ()  # lots that do not add up are left out rather than rejected
    return Holding(symbol, q, engine_lots)


def _band(kind: str, width: Any) -> Band:
    return Band(BandKind(kind), float(width))


def _symbol(p: PositionRow) -> str:
    return p.symbol


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class SecurityDrift:
    symbol: str
    target_weight: Decimal
    current_weight: Decimal

    @property
    def drift(self) -> Decimal:
        return self.current_weight - self.target_weight


@dataclass(frozen=True)
class DriftVerdict:
    """The engine's drift verdict on one account, as drift-detected publishes it: out of
    tolerance when any level (security, sleeve, asset class, cash) is outside its band; the
    largest security drift and the band half-width of the security that has it; and each
    position's weight against its target in its sleeve (`symbols`, `target`, `current`)."""

    account_id: str
    out_of_tolerance: bool
    levels: tuple[str, ...]
    max_abs_drift: Decimal
    tolerance: Decimal
    total_value: Decimal
    symbols: Sequence[str]
    target: Sequence[float]
    current: Sequence[float]

    @property
    def securities(self) -> tuple[SecurityDrift, ...]:
        """Each position's weights as exact decimals (what the event carries)."""
        return tuple(
            SecurityDrift(s, _weight(t), _weight(c))
            for s, t, c in zip(self.symbols, self.target, self.current, strict=True)
        )


def rebalanced_verdict(result: RebalanceResult) -> DriftVerdict:
    """The verdict on an account before its rebalance, from the engine's own drift report."""
    report = result.drift_before
    symbols, target, current = [], [], []
    worst, tolerance = -1.0, 0.0
    for item in report.items:
        if item.level is DriftLevel.SECURITY:
            symbols.append(item.key)
            target.append(item.target)
            current.append(item.weight)
            if abs(item.drift) > worst:
                worst, tolerance = abs(item.drift), item.upper - item.target
    out = report.out_of_band
    return DriftVerdict(
        result.account_id,
        bool(out),
        tuple(dict.fromkeys(item.level.value for item in out)),
        _weight(max(worst, 0.0)),
        _weight(tolerance),
        result.summary.account_value.quantize(Decimal("0.01")),
        symbols,
        target,
        current,
    )


def scanned_accounts(arrays: BookArrays, scan: DriftScan) -> list[DriftVerdict]:
    """The verdict per account of the scan, from the same arrays the scan used (vectorized
    totals)."""
    n = len(arrays.account_ids)
    if n == 0:
        return []
    sleeve_rows = np.broadcast_to(np.arange(n)[:, None], arrays.slot_sleeve.shape)
    used = arrays.slot_sleeve >= 0
    sleeve_value = arrays.sleeve_cash.copy()
    np.add.at(sleeve_value, (sleeve_rows[used], arrays.slot_sleeve[used]), arrays.value[used])
    denominator = np.where(
        used, np.take_along_axis(sleeve_value, np.maximum(arrays.slot_sleeve, 0), axis=1), 1.0
    )
    weights = np.where(denominator > 0, arrays.value / np.where(denominator > 0, denominator, 1), 0)
    totals = arrays.value.sum(axis=1) + arrays.sleeve_cash.sum(axis=1) + arrays.account_cash
    # the band half-width of each account's largest security drift
    worst = np.argmax(np.where(used, np.abs(weights - arrays.slot_target), -1.0), axis=1)
    rows = np.arange(n)
    tolerance = np.where(
        used[rows, worst], arrays.slot_hi[rows, worst] - arrays.slot_target[rows, worst], 0.0
    )
    levels = [lv.value for lv in LEVELS]  # the scan's columns, in order
    out = []
    for i, account_id in enumerate(arrays.account_ids):
        slots = np.nonzero(used[i])[0]
        keys = arrays.slot_keys[i] if arrays.slot_keys is not None else None
        flags = scan.flags[i]
        out.append(
            DriftVerdict(
                account_id,
                bool(flags.any()),
                tuple(lv for j, lv in enumerate(levels) if flags[j]),
                _weight(float(scan.max_abs_drift[i, 0])),
                _weight(float(tolerance[i])),
                money(float(totals[i])).quantize(Decimal("0.01")),
                [keys[j] for j in slots] if keys is not None else [str(j) for j in slots],
                arrays.slot_target[i, slots].tolist(),
                weights[i, slots].tolist(),
            )
        )
    return out


def drift_securities_json(verdict: DriftVerdict) -> str:
    """The verdict's `securities` as drift-detected's JSON, written straight from the floats:
    the same text the event's model writes from `verdict.securities` (each weight rounded as
    `_weight` does, the drift their exact difference), without a decimal or a model per
    security."""
    parts = []
    for symbol, t, c in zip(verdict.symbols, verdict.target, verdict.current, strict=True):
        target, current = _weight_text(t), _weight_text(c)
        micro = int(current.replace(".", "")) - int(target.replace(".", ""))
        sign, micro = ("-", -micro) if micro < 0 else ("", micro)
        parts.append(
            f'{{"symbol":{_json_text(symbol)},"target_weight":"{target}",'
            f'"current_weight":"{current}","drift":"{sign}{micro // 1_000_000}.'
            f'{micro % 1_000_000:06d}"}}'
        )
    return "[" + ",".join(parts) + "]"


def drift_event_json(run_id: uuid.UUID, label: tuple[str, int], verdict: DriftVerdict) -> bytes:
    """drift-detected's payload for a verdict, as `DriftDetectedV1` serializes it (fields in
    the model's order; a test holds the two to the same bytes)."""
    return (
        f'{{"run_id":"{run_id}","account_id":{_json_text(verdict.account_id)},'
        f'"model_id":{_json_text(label[0])},"model_version":{int(label[1])},'
        f'"total_value":"{verdict.total_value:f}","max_abs_drift":"{verdict.max_abs_drift:f}",'
        f'"tolerance":"{verdict.tolerance:f}",'
        f'"out_of_tolerance":{"true" if verdict.out_of_tolerance else "false"},'
        f'"securities":{drift_securities_json(verdict)}}}'
    ).encode()


def _decimal_text(value: Decimal) -> str:
    """`format(value, "f")`, as the contracts write a decimal: `str` is the same text unless it
    chose an exponent, and much faster."""
    text = str(value)
    return format(value, "f") if "E" in text else text


@lru_cache(maxsize=4096)
def _price_text(price: float) -> str | None:
    """A trade's estimated price as trades-proposed carries it (`money`), None when it is
    not positive (the contract's rule); a chunk's trades share a few hundred prices."""
    value = money(price)
    return _decimal_text(value) if value > 0 else None


def _json_text(text: str) -> str:
    """A JSON string as the event models write it (pydantic's own writer unless plain)."""
    return f'"{text}"' if _PLAIN.fullmatch(text) else to_json(text).decode()


_PLAIN = re.compile(r"[A-Za-z0-9 ._:/-]*")


def _weight(value: float) -> Decimal:
    """A weight as drift-detected carries it: six decimals, the float rounded once."""
    return Decimal(_weight_text(value))


def _weight_text(value: float) -> str:
    return f"{max(value, 0.0) + 0.0:.6f}"  # + 0.0: -0.0 is 0


def money(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.000001"))
