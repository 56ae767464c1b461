"""The optimizer's input: one sleeve as arrays (names, index, prices, lots, risk model).

Rules of the tax engine are called, not restated: a lot's term is ``tax.model.term_of``
(applied to a whole array through the one cut-off date it implies), harvest thresholds are
``tax.harvest.HarvestPolicy.thresholds``, wash-sale blocks come from ``tax.wash.buy_blocks``
and ``tax.wash.sell_blocks`` (``problem_from_lots``), substantially identical sets from
``tax.model.Identity``. Vectorized forms of per-lot formulas (tax cost per share, the harvest
test, min-tax lot order) are checked against the scalar functions in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ballast_engine.errors import EngineInputError
from ballast_engine.tax.harvest import HarvestPolicy
from ballast_engine.tax.model import EquivalenceSet, Identity, Lot, Term, term_of
from ballast_engine.tax.wash import LossWindow, buy_blocks, sell_blocks

Redistribution = Literal["pro_rata", "sector", "equivalence"]
REDISTRIBUTIONS: tuple[str, ...] = ("pro_rata", "sector", "equivalence")
WEIGHT_TOLERANCE = 1e-4

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


class OptimizerInputError(EngineInputError):
    """The sleeve problem is malformed (shape, sign, range, unknown name)."""

    code = "invalid_optimizer_input"


@dataclass(frozen=True, eq=False)
class LotArrays:
    """Open tax lots of the sleeve, one entry per lot.

    ``name``: index into the problem's names; ``basis``: total cost basis (wash-sale
    adjustments included); ``holding_start``: start of the holding period (decides the
    term); ``sell_blocked``: a sale at a loss would be washed by a recent purchase.
    """

    name: IntArray
    quantity: FloatArray
    basis: FloatArray
    holding_start: NDArray[np.datetime64]
    lot_ids: tuple[str, ...]
    sell_blocked: BoolArray | None = None

    def __len__(self) -> int:
        return len(self.quantity)


@dataclass(frozen=True, eq=False)
class SleeveProblem:
    """One direct-indexed sleeve: the index it follows, what it holds, what it may trade.

    ``equivalence``: id of the name's equivalence set (-1: none); members are substitutes
    and count as one for tracking. ``identical``: the name's set is substantially identical
    for the wash-sale rule. ``excluded``: client exclusions (weight 0, sold); their index
    weight goes elsewhere by ``redistribution``. ``buy_blocked``: names a recent loss sale
    forbids buying (wash-sale rule). Rates and money are floats here; results are Decimal.
    """

    names: NDArray[np.str_]
    index_weights: FloatArray
    prices: FloatArray
    sectors: IntArray
    sector_names: tuple[str, ...]
    exposures: FloatArray
    factor_names: tuple[str, ...]
    factor_cov: FloatArray
    specific_vol: FloatArray
    lots: LotArrays
    cash: float
    on: date
    equivalence: IntArray | None = None
    identical: BoolArray | None = None
    buy_blocked: BoolArray | None = None
    excluded: BoolArray | None = None
    redistribution: Redistribution = "pro_rata"
    short_term_rate: float = 0.37
    long_term_rate: float = 0.20
    realized_to_date: float = 0.0
    cash_reserve: float = 0.0
    fractional: bool = False
    share_decimals: int = 3
    min_trade_value: float = 0.0
    cost_rate: float = 0.0005
    harvest_policy: HarvestPolicy = field(default_factory=HarvestPolicy)
    account_id: str = ""
    sleeve_id: str = "main"

    @property
    def n_names(self) -> int:
        return len(self.names)

    def error(self, message: str, field_name: str, security: str | None = None) -> Any:
        return OptimizerInputError(
            message,
            account=self.account_id or None,
            sleeve=self.sleeve_id,
            security=security,
            field=field_name,
        )


def _flags(value: BoolArray | None, n: int) -> BoolArray:
    return np.zeros(n, dtype=bool) if value is None else np.asarray(value, dtype=bool)


@dataclass(frozen=True, eq=False)
class Prepared:
    """A validated problem with the derived arrays the formulation needs."""

    problem: SleeveProblem
    shares: FloatArray  # (N,) held shares (sum of lots)
    equivalence: IntArray  # (N,) tracking group of each name (0..G-1)
    n_groups: int
    identical_group: IntArray  # (N,) wash group of each name (substantially identical)
    buy_blocked: BoolArray
    excluded: BoolArray
    sell_blocked: BoolArray  # (L,)
    long_term: BoolArray  # (L,)
    lot_price: FloatArray  # (L,)
    gain_per_share: FloatArray  # (L,) price − basis per share
    tax_per_share: FloatArray  # (L,) gain per share × the term's rate
    harvestable: BoolArray  # (L,) loss past the harvest thresholds in force


def long_term_mask(holding_start: NDArray[np.datetime64], on: date) -> BoolArray:
    """Which lots are long-term on ``on``: ``tax.model.term_of`` through its cut-off date."""
    # term_of is monotone in the start date, so one cut-off date splits every array
    cutoff = None
    for back in range(370, 360, -1):
        start = on - timedelta(days=back)
        if term_of(start, on) is Term.LONG:
            cutoff = start
    assert cutoff is not None
    return np.asarray(holding_start, dtype="datetime64[D]") <= np.datetime64(cutoff, "D")


def _check_finite(p: SleeveProblem, name: str, values: FloatArray, shape: tuple[int, ...]) -> None:
    if values.shape != shape:
        raise p.error(f"has shape {values.shape}, expected {shape}", name)
    if not np.all(np.isfinite(values)):
        raise p.error("contains a value that is not a finite number", name)


def _first_bad(p: SleeveProblem, mask: BoolArray) -> str | None:
    hits = np.flatnonzero(mask)
    return str(p.names[hits[0]]) if len(hits) else None


def prepare(p: SleeveProblem) -> Prepared:
    """Validate a problem and derive terms, gains, groups and blocks."""
    n = len(p.names)
    if n == 0:
        raise p.error("the sleeve has no names", "names")
    if len(set(p.names.tolist())) != n:
        raise p.error("a name appears twice", "names")
    _check_finite(p, "index_weights", p.index_weights, (n,))
    _check_finite(p, "prices", p.prices, (n,))
    k = len(p.factor_names)
    _check_finite(p, "exposures", p.exposures, (n, k))
    _check_finite(p, "factor_cov", p.factor_cov, (k, k))
    _check_finite(p, "specific_vol", p.specific_vol, (n,))
    if np.any(p.prices <= 0):
        raise p.error("must be positive", "prices", _first_bad(p, p.prices <= 0))
    if np.any(p.index_weights < 0):
        raise p.error("must not be negative", "index_weights", _first_bad(p, p.index_weights < 0))
    if abs(float(p.index_weights.sum()) - 1.0) > WEIGHT_TOLERANCE:
        raise p.error(
            f"add up to {float(p.index_weights.sum()):.6f}, not 1 (±{WEIGHT_TOLERANCE})",
            "index_weights",
        )
    if p.sectors.shape != (n,) or np.any(p.sectors < 0) or np.any(p.sectors >= len(p.sector_names)):
        raise p.error("must be one code per name, each naming one of sector_names", "sectors")
    for name, value in (("cash", p.cash), ("cash_reserve", p.cash_reserve)):
        if not np.isfinite(value) or value < 0:
            raise p.error("must be a finite amount, not negative", name)
    for name, value in (
        ("short_term_rate", p.short_term_rate),
        ("long_term_rate", p.long_term_rate),
        ("cost_rate", p.cost_rate),
    ):
        if not 0 <= value < 1:
            raise p.error("must be a fraction in [0, 1)", name)
    if p.min_trade_value < 0 or not np.isfinite(p.min_trade_value):
        raise p.error("must be a finite amount, not negative", "min_trade_value")
    if p.redistribution not in REDISTRIBUTIONS:
        raise p.error(f"must be one of {', '.join(REDISTRIBUTIONS)}", "redistribution")
    if not 0 <= p.share_decimals <= 8:
        raise p.error("must be between 0 and 8", "share_decimals")

    lots = p.lots
    n_lots = len(lots.quantity)
    for name, values in (("lots.quantity", lots.quantity), ("lots.basis", lots.basis)):
        _check_finite(p, name, values, (n_lots,))
    if lots.name.shape != (n_lots,) or len(lots.lot_ids) != n_lots:
        raise p.error("name, quantity, basis, holding_start and lot_ids differ in length", "lots")
    if lots.holding_start.shape != (n_lots,):
        raise p.error("holding_start differs in length from the lots", "lots.holding_start")
    if n_lots and (np.any(lots.name < 0) or np.any(lots.name >= n)):
        raise p.error("names a position outside names", "lots.name")
    if np.any(lots.quantity <= 0):
        raise p.error("must be positive", "lots.quantity")
    if np.any(lots.basis < 0):
        raise p.error("must not be negative", "lots.basis")
    if n_lots and np.any(lots.holding_start > np.datetime64(p.on, "D")):
        raise p.error("a lot starts after the trade date", "lots.holding_start")

    equivalence = (
        np.full(n, -1, dtype=np.int64)
        if p.equivalence is None
        else np.asarray(p.equivalence, dtype=np.int64)
    )
    if equivalence.shape != (n,):
        raise p.error(f"has shape {equivalence.shape}, expected {(n,)}", "equivalence")
    identical = _flags(p.identical, n)
    # tracking groups: each equivalence set is one group, every other name its own
    raw = np.where(equivalence >= 0, equivalence, equivalence.max(initial=0) + 1 + np.arange(n))
    _, group = np.unique(raw, return_inverse=True)
    group = group.astype(np.int64)
    wash_group = np.where(identical & (equivalence >= 0), group, -1 - np.arange(n))

    shares = np.bincount(lots.name, weights=lots.quantity, minlength=n).astype(np.float64)
    lot_price = p.prices[lots.name]
    gain_per_share = lot_price - lots.basis / lots.quantity
    long_term = long_term_mask(lots.holding_start, p.on)
    rates = np.where(long_term, p.long_term_rate, p.short_term_rate)
    pct, dollars = p.harvest_policy.thresholds(p.on)
    loss = lots.basis - lots.quantity * lot_price
    with np.errstate(divide="ignore", invalid="ignore"):
        loss_pct = np.where(lots.basis > 0, loss * 100 / lots.basis, 0.0)
    harvestable = (
        (lots.basis > 0) & (loss > 0) & (loss_pct >= float(pct)) & (loss >= float(dollars))
    )
    return Prepared(
        problem=p,
        shares=shares,
        equivalence=group,
        n_groups=int(group.max()) + 1,
        identical_group=wash_group,
        buy_blocked=_flags(p.buy_blocked, n),
        excluded=_flags(p.excluded, n),
        sell_blocked=_flags(lots.sell_blocked, n_lots),
        long_term=long_term,
        lot_price=lot_price,
        gain_per_share=gain_per_share,
        tax_per_share=gain_per_share * rates,
        harvestable=harvestable,
    )


def problem_from_lots(
    *,
    names: Sequence[str],
    lots: Sequence[Lot],
    on: date,
    equivalence_sets: Sequence[EquivalenceSet] = (),
    loss_windows: Sequence[LossWindow] = (),
    household_lots: Sequence[Lot] = (),
    **arrays: Any,
) -> SleeveProblem:
    """A problem from the tax engine's lots, sets and wash-sale windows (the ledger's view).

    Buy blocks are ``tax.wash.buy_blocks(loss_windows)``; sell blocks
    ``tax.wash.sell_blocks(lots, household_lots + lots)`` at the problem's prices. Every
    other field of ``SleeveProblem`` is passed through ``arrays`` (names excepted).
    """
    position = {symbol: i for i, symbol in enumerate(names)}
    identity = Identity.from_sets(list(equivalence_sets))
    prices = np.asarray(arrays["prices"], dtype=np.float64)
    decimal_prices = {s: Decimal(repr(float(prices[i]))) for s, i in position.items()}
    blocked_symbols = {s for b in buy_blocks(loss_windows, on, identity) for s in b.symbols}
    blocked_lots = {
        b.lot_id
        for b in sell_blocks(
            lots, [*household_lots, *lots], on, identity=identity, prices=decimal_prices
        )
    }
    equivalence = np.full(len(names), -1, dtype=np.int64)
    identical = np.zeros(len(names), dtype=bool)
    for set_id, eq in enumerate(equivalence_sets):
        for symbol in eq.members:
            if symbol in position:
                equivalence[position[symbol]] = set_id
                identical[position[symbol]] = eq.identical
    unknown = [lot.symbol for lot in lots if lot.symbol not in position]
    if unknown:
        raise OptimizerInputError(
            "a lot's security is not among the names", security=unknown[0], field="lots"
        )
    lot_arrays = LotArrays(
        name=np.array([position[lot.symbol] for lot in lots], dtype=np.int64),
        quantity=np.array([float(lot.quantity) for lot in lots]),
        basis=np.array([float(lot.cost_basis) for lot in lots]),
        holding_start=np.array([lot.holding_start for lot in lots], dtype="datetime64[D]"),
        lot_ids=tuple(lot.lot_id for lot in lots),
        sell_blocked=np.array([lot.lot_id in blocked_lots for lot in lots], dtype=bool),
    )
    buy_blocked = np.array([s in blocked_symbols for s in names], dtype=bool)
    if "buy_blocked" in arrays:
        buy_blocked |= np.asarray(arrays.pop("buy_blocked"), dtype=bool)
    return SleeveProblem(
        names=np.asarray(names),
        lots=lot_arrays,
        on=on,
        equivalence=equivalence,
        identical=identical,
        buy_blocked=buy_blocked,
        **arrays,
    )
