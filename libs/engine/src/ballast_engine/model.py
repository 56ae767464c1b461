"""The engine's plain data: what goes in (reference data, accounts, requests) and what comes out.

Inputs use float64 for prices, quantities and cash (the engine computes in float64); outputs
round explicitly at the boundary: trade quantities to the sleeve's share increment, money to
cents, both as ``Decimal``. All weights are fractions (0.25 means 25%).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ballast_engine.derived import DerivedValues
from ballast_engine.tax.model import DEFAULT_RELIEF_METHOD, ReliefMethod, Side

# --------------------------------------------------------------------------------------------
# Enumerations


class BandKind(StrEnum):
    ABSOLUTE = "absolute"  # target ± width (weight points)
    RELATIVE = "relative"  # target ± width × target


class RestrictionKind(StrEnum):
    DO_NOT_BUY = "do_not_buy"
    DO_NOT_SELL = "do_not_sell"
    DO_NOT_HOLD = "do_not_hold"


class RestrictionScope(StrEnum):
    SECURITY = "security"
    SECTOR = "sector"
    ASSET_CLASS = "asset_class"
    LIST = "list"


class FreedCashPolicy(StrEnum):
    """What to do with target weight a restriction (or a "hold" without replacement) frees."""

    CASH = "cash"  # keep it as cash
    PRO_RATA = "pro_rata"  # spread over the model's buyable positions by weight
    SECTOR = "sector"  # spread over buyable positions of the same sector (else pro rata)


class RangeKind(StrEnum):
    """Where a strategic rebalance stops a model that is moved."""

    TARGET = "target"
    BAND = "band"
    INTERIOR = "interior"


class RequestKind(StrEnum):
    REBALANCE = "rebalance"  # full rebalance (strategic where the account has a strategy)
    RAISE_CASH = "raise_cash"  # withdrawal of `amount`: sells only, least drift
    INVEST_CASH = "invest_cash"  # deposit of `amount` (may be 0: invest idle cash): buys only
    HARVEST = "harvest"  # tax-loss harvesting only (see ballast_engine.harvesting)


class Scope(StrEnum):
    AUTO = "auto"  # strategic if the account has a strategy, else tactical
    TACTICAL = "tactical"  # each sleeve on its own; no cash moves between sleeves
    STRATEGIC = "strategic"


class Reason(StrEnum):
    """Why a trade is proposed (every trade carries exactly one)."""

    DRIFT = "drift"  # the position is outside its range: back to target
    RESTRICTION = "restriction"  # a do-not-hold restriction forces the sale
    NOT_IN_MODEL = "not_in_model"  # held but not in the model (nor equivalent to it)
    CASH_NEED = "cash_need"  # sold to raise cash (withdrawal, reserve, cash to another sleeve)
    INVEST_CASH = "invest_cash"  # buys cash (deposit, cash from another sleeve, excess cash)
    REPLACEMENT = "replacement"  # buy-list replacement of a security the model marks "hold"
    TAX_LOSS_HARVEST = "tax-loss-harvest"  # a harvest sale and its replacement buy
    SWAP_BACK = "swap-back"  # back from a harvest replacement after the wash-sale window


class DriftLevel(StrEnum):
    SECURITY = "security"
    SLEEVE = "sleeve"
    ASSET_CLASS = "asset_class"
    CASH = "cash"


# --------------------------------------------------------------------------------------------
# Reference data (shared by every account of a book)


@dataclass(frozen=True, slots=True)
class Security:
    """One row of the security master.

    Attributes:
        symbol: ticker (unique key).
        price: last price in dollars; ``None`` means unpriced (an error if it must trade).
        asset_class: e.g. ``"us_equity"``.
        sector: e.g. ``"Energy"``; used by sector restrictions and the sector freed-cash policy.
        fractional: whether fractional shares may be traded (the sleeve must allow it too).
    """

    symbol: str
    price: float | None
    asset_class: str = "unclassified"
    sector: str | None = None
    fractional: bool = False


@dataclass(frozen=True, slots=True)
class Band:
    """A tolerance around a target weight: absolute (± points) or relative (± share of target)."""

    kind: BandKind = BandKind.ABSOLUTE
    width: float = 0.0

    def bounds(self, target: float) -> tuple[float, float]:
        if self.kind is BandKind.ABSOLUTE:
            return target - self.width, target + self.width
        return target * (1.0 - self.width), target * (1.0 + self.width)

    def half_width(self, target: float) -> float:
        return self.width if self.kind is BandKind.ABSOLUTE else self.width * target


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One line of a model.

    Attributes:
        symbol: the security.
        weight: target weight (weight-based models).
        shares: target share count (share-based models).
        hold: the manager keeps existing holdings but buys no more; the unfilled part of the
            weight goes to ``replacement`` (a buy-list security) or to the freed-cash policy.
        replacement: buy-list security that replaces a "hold" security.
        band: per-security weight range, overriding the sleeve's ``security_band``.
    """

    symbol: str
    weight: float = 0.0
    shares: float = 0.0
    hold: bool = False
    replacement: str | None = None
    band: Band | None = None


@dataclass(frozen=True, slots=True)
class Model:
    """A weighted (or share-based) list of securities.

    For ``kind="weights"`` the entry weights plus ``cash_weight`` must add up to 1 (within
    ``WEIGHT_TOLERANCE``). For ``kind="shares"`` (a static model) the implied weights are
    ``shares × price`` over the model's value (``Σ shares × price + cash``), so they move
    with prices exactly as the model itself does.
    """

    model_id: str
    entries: tuple[ModelEntry, ...]
    kind: str = "weights"
    cash_weight: float = 0.0
    cash: float = 0.0


@dataclass(frozen=True, slots=True)
class StrategyEntry:
    """A model's place in a strategy: its target weight in the account and its band."""

    model_id: str
    weight: float
    band: Band = Band()


@dataclass(frozen=True, slots=True)
class RebalanceRange:
    """Where a model moved by a strategic rebalance stops.

    ``interior_pct`` is the distance left to target as a percentage of the band's half-width:
    99 stops just inside the band, 1 just short of the target (``target`` = 0, ``band`` = 100).
    """

    kind: RangeKind = RangeKind.TARGET
    interior_pct: float = 50.0

    def start_pct(self) -> float:
        if self.kind is RangeKind.TARGET:
            return 0.0
        if self.kind is RangeKind.BAND:
            return 100.0
        return self.interior_pct


@dataclass(frozen=True, slots=True)
class Strategy:
    """Models combined with weights and bands (a UMA's allocation)."""

    strategy_id: str
    entries: tuple[StrategyEntry, ...]
    rebalance_range: RebalanceRange = RebalanceRange()


@dataclass(frozen=True, slots=True)
class EquivalenceSet:
    """Securities treated as substitutes (holding one counts toward another's target).

    ``identical``: the members are also *substantially identical* for the wash-sale rule
    (e.g. two share classes of one fund); plain sets are substitutes, not identical."""

    set_id: str
    members: tuple[str, ...]
    identical: bool = False


@dataclass(frozen=True)
class Reference:
    """Everything shared by the accounts of a book: security master, models, strategies,
    named security lists (e.g. ESG screens) and equivalence sets."""

    securities: Mapping[str, Security]
    models: Mapping[str, Model] = field(default_factory=dict)
    strategies: Mapping[str, Strategy] = field(default_factory=dict)
    lists: Mapping[str, frozenset[str]] = field(default_factory=dict)
    equivalence_sets: tuple[EquivalenceSet, ...] = ()


# --------------------------------------------------------------------------------------------
# Accounts


@dataclass(frozen=True, slots=True)
class Restriction:
    """Do-not-buy / do-not-sell / do-not-hold on a security, sector, asset class or list."""

    kind: RestrictionKind
    scope: RestrictionScope
    value: str
    source: str = "client"  # who set it: firm, advisor, client, ...


@dataclass(frozen=True, slots=True)
class Settings:
    """The model owner's tactical settings for one sleeve.

    Attributes:
        min_trade_value: smallest trade in dollars (sales that close a position are exempt).
        min_trade_shares: smallest trade in shares (same exemption).
        min_opening_trade_value: smallest buy that opens a new position, in dollars.
        fractional: allow fractional shares (only for fractional-eligible securities).
        share_decimals: decimals of a fractional share trade (quantities round down for buys).
        cash_target: cash the sleeve aims to hold, as a weight of the sleeve.
        cash_reserve: dollars never spent (a floor under the cash target).
        cash_band: tolerance of cash around its target (no rebalance while inside).
        security_band: default security weight range (no trade while inside).
        freed_cash: what to do with weight a restriction frees.
    """

    min_trade_value: float = 0.0
    min_trade_shares: float = 0.0
    min_opening_trade_value: float = 0.0
    fractional: bool = False
    share_decimals: int = 3
    cash_target: float = 0.0
    cash_reserve: float = 0.0
    cash_band: Band = Band()
    security_band: Band = Band()
    freed_cash: FreedCashPolicy = FreedCashPolicy.PRO_RATA


@dataclass(frozen=True, slots=True)
class TaxLot:
    """A purchase of ``quantity`` shares on ``acquired`` (ISO date) for ``cost`` dollars.

    Used by tax-aware rebalancing (``Account.tax``): sells name the lots they relieve.
    ``acquired`` is the start of the holding period (carried back by a wash sale);
    ``replacement`` marks shares that already absorbed a wash-sale loss (they wash no other).
    """

    lot_id: str
    quantity: float
    cost: float
    acquired: str
    replacement: bool = False


@dataclass(frozen=True, slots=True)
class GainBudgetSetting:
    """A yearly cap on net realized gains: ``limit`` dollars a year, ``realized_to_date``
    already realized this year; ``hard`` never exceeds it (sales are cut), else warns."""

    limit: float
    realized_to_date: float = 0.0
    hard: bool = True

    @property
    def remaining(self) -> float:
        return self.limit - self.realized_to_date


@dataclass(frozen=True, slots=True)
class HarvestSettings:
    """Tax-loss harvesting thresholds: a lot is harvested when its loss reaches BOTH
    ``min_loss_percent`` of its basis and ``min_loss_dollars``. ``schedule`` entries
    ``(from_month, percent, dollars)`` change them from that month on. ``swap_back``: a
    harvest run also swaps replacements back to the model security once the wash-sale window
    is over (only lots that can be sold without a gain)."""

    min_loss_percent: float = 10.0
    min_loss_dollars: float = 100.0
    schedule: tuple[tuple[int, float, float], ...] = ()
    swap_back: bool = False


@dataclass(frozen=True, slots=True)
class LossSale:
    """A recent sale at a loss, in any account of the household, whose shares no
    replacement has absorbed yet: buying ``symbol`` (or anything substantially identical)
    within 30 days after ``sold_on`` would wash it."""

    symbol: str
    sold_on: str
    quantity: float
    loss_per_share: float = 0.0


@dataclass(frozen=True, slots=True)
class RecentPurchase:
    """A purchase in another account of the household (this account's own purchases are its
    lots): selling ``symbol`` at a loss within 30 days after ``acquired`` would be washed."""

    symbol: str
    acquired: str
    quantity: float
    purchase_id: str = ""


@dataclass(frozen=True, slots=True)
class TaxSettings:
    """What makes an account's rebalance tax-aware (``None`` on ``Account.tax``: not at all).

    Attributes:
        as_of: the trade date (ISO); decides each lot's term and the wash-sale windows.
        account_type: ``taxable`` or ``ira`` (an IRA realizes no gains; wash-sale buy blocks
            still apply: a purchase in an IRA loses the household's loss for good).
        method: lot order of sells (``ReliefMethod``; default FIFO): ``mintax`` ranks lots by
            tax cost per share (losses first, long-term before short-term), or ``fifo``,
            ``lifo``, ``hifo``.
        short_term_rate, long_term_rate: marginal rates (0.37 = 37%).
        gain_budget: yearly net realized-gain budget (hard limit or warning).
        avoid_short_term_gains: never sell a lot at a short-term gain.
        harvest: tax-loss harvesting thresholds (``harvest`` requests).
        recent_loss_sales: household loss sales still in their wash-sale window.
        recent_purchases: household purchases of the last 30 days in other accounts.
    """

    as_of: str
    account_type: str = "taxable"
    method: ReliefMethod = DEFAULT_RELIEF_METHOD
    short_term_rate: float = 0.37
    long_term_rate: float = 0.20
    gain_budget: GainBudgetSetting | None = None
    avoid_short_term_gains: bool = False
    harvest: HarvestSettings | None = None
    recent_loss_sales: tuple[LossSale, ...] = ()
    recent_purchases: tuple[RecentPurchase, ...] = ()


@dataclass(frozen=True, slots=True)
class Holding:
    symbol: str
    quantity: float
    lots: tuple[TaxLot, ...] = ()


@dataclass(frozen=True, slots=True)
class Sleeve:
    """One model's part of an account, with its own cash, holdings and settings."""

    sleeve_id: str
    model_id: str
    cash: float = 0.0
    holdings: tuple[Holding, ...] = ()
    settings: Settings = Settings()
    restrictions: tuple[Restriction, ...] = ()


@dataclass(frozen=True, slots=True)
class Account:
    """An SMA (one sleeve) or a UMA (several sleeves, usually with a strategy).

    Attributes:
        cash: unallocated account cash (e.g. a deposit not yet given to a sleeve); a
            strategic rebalance hands it to the sleeves.
        restrictions: apply to every sleeve (sleeve restrictions add to them).
        strategy_id: the strategy the sleeves follow (UMA); sleeves match its entries by
            ``model_id``.
        asset_class_band: tolerance of account-level asset-class weights (drift only).
        tax: tax settings; when given, the rebalance is tax-aware (see
            ``ballast_engine.taxaware``); ``None`` leaves it exactly as without.
    """

    account_id: str
    sleeves: tuple[Sleeve, ...]
    cash: float = 0.0
    restrictions: tuple[Restriction, ...] = ()
    strategy_id: str | None = None
    asset_class_band: Band = Band(BandKind.ABSOLUTE, 0.05)
    tax: TaxSettings | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """What to do: a full rebalance, raise ``amount`` of cash, or invest ``amount`` more."""

    kind: RequestKind = RequestKind.REBALANCE
    amount: float = 0.0
    scope: Scope = Scope.AUTO


@dataclass(frozen=True)
class RebalanceInput:
    """Everything one account's rebalance needs (what a scenario file holds)."""

    account: Account
    reference: Reference
    request: Request = Request()


@dataclass(frozen=True)
class Book:
    """Many accounts sharing one reference (what a book file holds)."""

    reference: Reference
    accounts: tuple[Account, ...]
    request: Request = Request()


# --------------------------------------------------------------------------------------------
# Outputs


# a trade's deferred sentence and a deferred drift report's items, once made
FIRST_READS = DerivedValues()


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Trade:
    account_id: str
    sleeve_id: str
    symbol: str
    side: Side
    quantity: Decimal
    price: float
    estimated_value: Decimal
    reason: Reason
    explanation: str
    opens_position: bool = False
    closes_position: bool = False
    lots: tuple[LotSale, ...] = ()  # tax-aware sells: the lots relieved, in order
    estimated_tax: Decimal | None = None  # tax-aware trades: tax on the gain (negative: saved)
    # the engine may defer writing ``explanation``: (function, arguments) until first read
    _explain: Any = field(default=None, init=False, repr=False, compare=False)

    def __getattr__(self, name: str) -> Any:
        # only reached for an unset slot: the sentence of a trade built with a deferred
        # explanation (``tactical._build_trades``), made on first read and kept beside it
        if name == "explanation":
            make = object.__getattribute__(self, "_explain")
            if make is not None:
                return FIRST_READS.value(self, make)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> list[Any]:
        # a pickle or a copy carries the sentence itself, not the recipe that writes it
        return [None if f.name == "_explain" else getattr(self, f.name) for f in fields(self)]

    @property
    def lot_ids(self) -> tuple[str, ...]:
        return tuple(lt.lot_id for lt in self.lots)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "account_id": self.account_id,
            "sleeve_id": self.sleeve_id,
            "symbol": self.symbol,
            "side": self.side.value,
            "quantity": str(self.quantity),
            "price": self.price,
            "estimated_value": str(self.estimated_value),
            "reason": self.reason.value,
            "explanation": self.explanation,
            "opens_position": self.opens_position,
            "closes_position": self.closes_position,
        }
        if self.estimated_tax is not None:  # only tax-aware trades carry these keys
            d["lot_ids"] = list(self.lot_ids)
            d["lots"] = [lt.to_dict() for lt in self.lots]
            d["estimated_tax"] = str(self.estimated_tax)
        return d


# Trade's fields in order, for the hot paths that build trades by position (much faster than
# keywords for a frozen dataclass of a dozen fields); fields added later need defaults
TRADE_FIELDS = (
    "account_id",
    "sleeve_id",
    "symbol",
    "side",
    "quantity",
    "price",
    "estimated_value",
    "reason",
    "explanation",
    "opens_position",
    "closes_position",
    "lots",
    "estimated_tax",
)
assert tuple(f.name for f in fields(Trade) if f.init) == TRADE_FIELDS


@dataclass(frozen=True, slots=True)
class LotSale:
    """Shares of one tax lot relieved by a sell: the gain and the estimated tax on it."""

    lot_id: str
    quantity: Decimal
    acquired: str
    cost_basis: Decimal
    proceeds: Decimal
    gain: Decimal
    term: str  # short | long
    tax: Decimal  # gain x the term's rate (negative: saved)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lot_id": self.lot_id,
            "quantity": str(self.quantity),
            "acquired": self.acquired,
            "cost_basis": str(self.cost_basis),
            "proceeds": str(self.proceeds),
            "gain": str(self.gain),
            "term": self.term,
            "tax": str(self.tax),
        }


@dataclass(frozen=True, slots=True)
class TaxReport:
    """The tax side of a tax-aware result: gains realized by the proposal, the estimated
    tax (terms netted as on Schedule D; negative: saved), the gain budget, the wash-sale
    blocks that applied and plain-English warnings."""

    as_of: str
    account_type: str
    short_term_gain: Decimal
    long_term_gain: Decimal
    estimated_tax: Decimal
    budget_limit: Decimal | None
    budget_remaining_before: Decimal | None
    budget_remaining_after: Decimal | None
    budget_hard: bool | None
    buy_blocked: tuple[str, ...]
    sell_blocked_lots: tuple[str, ...]
    warnings: tuple[str, ...]
    tax_saved: Decimal = Decimal("0.00")  # harvests: estimated tax saved by the losses harvested

    def to_dict(self) -> dict[str, Any]:
        def s(x: Decimal | None) -> str | None:
            return None if x is None else str(x)

        return {
            "as_of": self.as_of,
            "account_type": self.account_type,
            "short_term_gain": str(self.short_term_gain),
            "long_term_gain": str(self.long_term_gain),
            "estimated_tax": str(self.estimated_tax),
            "tax_saved": str(self.tax_saved),
            "budget": None
            if self.budget_limit is None
            else {
                "limit": s(self.budget_limit),
                "hard": self.budget_hard,
                "remaining_before": s(self.budget_remaining_before),
                "remaining_after": s(self.budget_remaining_after),
            },
            "buy_blocked": list(self.buy_blocked),
            "sell_blocked_lots": list(self.sell_blocked_lots),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True)
class CashMovement:
    """Cash moved between sleeves; ``None`` on either end means the account itself:
    unallocated account cash, or (``purpose="withdrawal"``) the withdrawal paid out."""

    account_id: str
    from_sleeve: str | None
    to_sleeve: str | None
    amount: Decimal
    explanation: str
    purpose: str = "rebalance"  # rebalance | withdrawal | unallocated

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "from_sleeve": self.from_sleeve,
            "to_sleeve": self.to_sleeve,
            "amount": str(self.amount),
            "purpose": self.purpose,
            "explanation": self.explanation,
        }


@dataclass(slots=True)
class DriftItem:
    """Drift of one item (security group, sleeve, asset class or cash) against its band."""

    level: DriftLevel
    key: str
    sleeve_id: str | None
    weight: float
    target: float
    lower: float
    upper: float

    @property
    def drift(self) -> float:
        return self.weight - self.target

    @property
    def relative_drift(self) -> float | None:
        return (self.weight - self.target) / self.target if self.target else None

    @property
    def out_of_band(self) -> bool:
        return self.weight < self.lower - DRIFT_EPS or self.weight > self.upper + DRIFT_EPS

    @property
    def breach(self) -> float:
        """How far outside the band (0 inside)."""
        return max(0.0, self.lower - self.weight, self.weight - self.upper)

    def to_dict(self) -> dict[str, Any]:
        # the properties' arithmetic, inline (this runs for every item of every report)
        w, t, lo, hi = self.weight, self.target, self.lower, self.upper
        d = w - t
        return {
            "level": self.level._value_,
            "key": self.key,
            "sleeve_id": self.sleeve_id,
            "weight": round(w, 6),
            "target": round(t, 6),
            "drift": round(d, 6),
            "relative_drift": round(d / t, 6) if t else None,
            "lower": round(lo, 6),
            "upper": round(hi, 6),
            "out_of_band": w < lo - DRIFT_EPS or w > hi + DRIFT_EPS,
        }


@dataclass(frozen=True, slots=True, weakref_slot=True)
class AccountDrift:
    account_id: str
    items: tuple[DriftItem, ...]
    # the engine may defer building ``items``: (function, arguments) until first read
    _build: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def deferred(cls, account_id: str, build: tuple[Any, tuple[Any, ...]]) -> AccountDrift:
        """A drift report whose items ``build[0](*build[1])`` makes when first read."""
        obj = object.__new__(cls)
        # construction, as the dataclass's own __init__ does: nothing writes it afterwards
        object.__setattr__(obj, "account_id", account_id)
        object.__setattr__(obj, "_build", build)
        return obj

    def __getattr__(self, name: str) -> Any:
        # only reached for an unset slot: the items of a deferred report, made on first
        # read and kept beside it
        if name == "items":
            build = object.__getattribute__(self, "_build")
            if build is not None:
                return FIRST_READS.value(self, (_built_items, (build,)))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> list[Any]:
        # a pickle or a copy carries the items themselves, not the recipe that builds them
        return [None if f.name == "_build" else getattr(self, f.name) for f in fields(self)]

    @property
    def out_of_band(self) -> tuple[DriftItem, ...]:
        return tuple(i for i in self.items if i.out_of_band)

    def max_abs_drift(self, level: DriftLevel | None = None) -> float:
        vals = [abs(i.drift) for i in self.items if level is None or i.level is level]
        return max(vals, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        # one pass: each item's dict once (out-of-band ones copied), the maxima per level
        items = self.items
        dicts = [i.to_dict() for i in items]
        best: dict[DriftLevel, float] = {}
        for i in items:
            a = abs(i.weight - i.target)
            b = best.get(i.level)
            if b is None or a > b:
                best[i.level] = a
        return {
            "account_id": self.account_id,
            "out_of_band": [dict(d) for d in dicts if d["out_of_band"]],
            "max_abs_drift": {lv._value_: round(best.get(lv, 0.0), 6) for lv in DriftLevel},
            "items": dicts,
        }


def _built_items(build: tuple[Any, tuple[Any, ...]]) -> tuple[DriftItem, ...]:
    return tuple(build[0](*build[1]))


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the reviewer should know: a conflict, a skipped trade, a shortfall."""

    code: str
    message: str
    sleeve_id: str | None = None
    symbol: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "sleeve_id": self.sleeve_id,
            "symbol": self.symbol,
        }


@dataclass(frozen=True, slots=True)
class SleeveResult:
    sleeve_id: str
    model_id: str
    trades: tuple[Trade, ...]
    cash_before: Decimal
    cash_in: Decimal  # received from the account or other sleeves
    cash_out: Decimal  # given to the account (withdrawal) or other sleeves
    cash_after: Decimal
    value_before: Decimal
    value_after: Decimal
    projected_holdings: Mapping[str, float]
    projected_weights: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sleeve_id": self.sleeve_id,
            "model_id": self.model_id,
            "cash_before": str(self.cash_before),
            "cash_in": str(self.cash_in),
            "cash_out": str(self.cash_out),
            "cash_after": str(self.cash_after),
            "value_before": str(self.value_before),
            "value_after": str(self.value_after),
            "projected_holdings": {k: round(v, 6) for k, v in self.projected_holdings.items()},
            "projected_weights": {k: round(v, 6) for k, v in self.projected_weights.items()},
            "trades": [t.to_dict() for t in self.trades],
        }


@dataclass(frozen=True, slots=True)
class Summary:
    trade_count: int
    buy_count: int
    sell_count: int
    buy_value: Decimal
    sell_value: Decimal
    turnover: float  # (buys + sells) / 2 / account value
    account_value: Decimal
    cash_before: Decimal  # all cash (sleeves + unallocated) before
    cash_after: Decimal  # all cash after trades and the withdrawal
    max_drift_before: float
    max_drift_after: float
    # the largest drift of a security (the drift reports' security level), before and after;
    # not in ``to_dict`` (the engine's output keeps its published shape)
    max_security_drift_before: float = 0.0
    max_security_drift_after: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "trade_count": self.trade_count,
            "buy_count": self.buy_count,
            "sell_count": self.sell_count,
            "buy_value": str(self.buy_value),
            "sell_value": str(self.sell_value),
            "turnover": round(self.turnover, 6),
            "account_value": str(self.account_value),
            "cash_before": str(self.cash_before),
            "cash_after": str(self.cash_after),
            "max_drift_before": round(self.max_drift_before, 6),
            "max_drift_after": round(self.max_drift_after, 6),
        }


@dataclass(frozen=True, slots=True)
class RebalanceResult:
    account_id: str
    request: Request
    trades: tuple[Trade, ...]
    sleeves: tuple[SleeveResult, ...]
    cash_movements: tuple[CashMovement, ...]
    unallocated_cash_after: Decimal
    drift_before: AccountDrift
    drift_after: AccountDrift
    notices: tuple[Notice, ...]
    summary: Summary
    tax: TaxReport | None = None  # tax-aware accounts only

    def to_dict(self) -> dict[str, Any]:
        d = {
            "account_id": self.account_id,
            "request": {
                "kind": self.request.kind.value,
                "amount": self.request.amount,
                "scope": self.request.scope.value,
            },
            "summary": self.summary.to_dict(),
            "trades": [t.to_dict() for t in self.trades],
            "cash_movements": [m.to_dict() for m in self.cash_movements],
            "unallocated_cash_after": str(self.unallocated_cash_after),
            "sleeves": [s.to_dict() for s in self.sleeves],
            "notices": [n.to_dict() for n in self.notices],
            "drift_before": self.drift_before.to_dict(),
            "drift_after": self.drift_after.to_dict(),
        }
        if self.tax is not None:
            d["tax"] = self.tax.to_dict()
        return d


@dataclass(frozen=True, slots=True)
class AccountFailure:
    """One account of a book that could not be rebalanced, and why."""

    account_id: str
    error: str
    code: str
    detail: Mapping[str, str | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "error": self.error,
            "code": self.code,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True, slots=True)
class BookResult:
    results: tuple[RebalanceResult, ...]
    failures: tuple[AccountFailure, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "failures": [f.to_dict() for f in self.failures],
        }


# Tolerances (documented in docs/engine.md)
WEIGHT_TOLERANCE = 1e-4  # model/strategy weights must sum to 1 within ±0.01 point
DRIFT_EPS = 1e-9  # a weight this close to its band counts as inside
