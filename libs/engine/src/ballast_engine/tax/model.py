"""Plain data of the tax engine: lots, trades, reliefs, disposals, and the date and money rules.

Everything here is immutable except :class:`Disposal`, whose wash-sale adjustment can grow
when a later purchase replaces the shares it sold. Money is ``Decimal`` rounded to cents
(half-even) whenever an amount is split; quantities are exact ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum

CENT = Decimal("0.01")
ZERO = Decimal(0)
WASH_WINDOW_DAYS = 30


class ReliefMethod(StrEnum):
    """How a sell that names no lot chooses the lots it relieves: the one vocabulary of an
    account's relief method (events, REST, book files, scenarios, CLIs all use these values).
    A sell that names its lots (specific identification) ignores it. ``mintax`` has one
    meaning, for the engine's sells and the ledger's relief alike
    (``ballast_engine.tax.lots.mintax_key``): lowest tax cost per share at the account's
    rates first."""

    FIFO = "fifo"
    LIFO = "lifo"
    HIFO = "hifo"
    MINTAX = "mintax"


# What an account that never chose a method gets: the IRS default without specific
# identification (first in, first out), and what the wire has always said.
DEFAULT_RELIEF_METHOD = ReliefMethod.FIFO
RELIEF_METHOD_NAMES: tuple[str, ...] = tuple(m.value for m in ReliefMethod)


class Term(StrEnum):
    SHORT = "short"
    LONG = "long"


@dataclass(frozen=True, slots=True)
class TaxRates:
    """Marginal rates of an account (0.37 = 37%)."""

    short_term: Decimal
    long_term: Decimal

    def rate(self, term: Term) -> Decimal:
        return self.short_term if term is Term.SHORT else self.long_term


# What an account that set no rates is taxed at (the rebalancing engine's and the event
# contracts' defaults too).
DEFAULT_TAX_RATES = TaxRates(Decimal("0.37"), Decimal("0.20"))


class AccountType(StrEnum):
    TAXABLE = "taxable"
    IRA = "ira"


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


def money(value: Decimal) -> Decimal:
    """Round an amount to cents, half-even (the ledger's only rounding of money)."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def prorate(total: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """The share of ``total`` that ``part`` of ``whole`` carries, in cents.

    ``part == whole`` returns ``total`` exactly, so splitting something in pieces and giving
    the last piece "the rest" conserves the total to the cent.
    """
    if part == whole:
        return total
    return money(total * part / whole)


def one_year_after(day: date) -> date:
    """The anniversary date; 29 February maps to 28 February of the next year."""
    try:
        return day.replace(year=day.year + 1)
    except ValueError:
        return date(day.year + 1, 2, 28)


def term_of(holding_start: date, sold: date) -> Term:
    """Long-term when held more than one year: sold after the anniversary of the start.

    The holding period starts the day after acquisition, so a lot bought 2025-03-15 is
    short-term when sold 2026-03-15 and long-term from 2026-03-16.
    """
    return Term.LONG if sold > one_year_after(holding_start) else Term.SHORT


@dataclass(frozen=True, slots=True)
class Lot:
    """An open tax lot.

    ``cost_basis`` is the total basis (price x quantity + fees + wash-sale adjustments).
    ``acquired`` is the purchase date; ``holding_start`` is the date the holding period is
    counted from (earlier than ``acquired`` when a wash sale tacked on the holding period of
    the shares it replaced). ``purchase_id`` names the purchase the shares came from: shares
    of one purchase never replace each other in a wash sale. ``replacement`` marks shares
    that already absorbed one wash-sale loss; ``wash_adjustment`` is the disallowed loss
    included in ``cost_basis``. ``seq`` orders lots acquired on the same day.
    """

    lot_id: str
    account: str
    symbol: str
    quantity: Decimal
    cost_basis: Decimal
    acquired: date
    holding_start: date
    purchase_id: str = ""
    sleeve: str = ""
    seq: int = 0
    replacement: bool = False
    wash_adjustment: Decimal = ZERO

    @property
    def basis_per_share(self) -> Decimal:
        return self.cost_basis / self.quantity

    def term_on(self, day: date) -> Term:
        return term_of(self.holding_start, day)


@dataclass(frozen=True, slots=True)
class Relief:
    """Part of a lot removed by a sale: the shares, their basis and their proceeds."""

    lot: Lot  # the lot as it was before the sale
    quantity: Decimal
    cost_basis: Decimal
    proceeds: Decimal
    sold: date
    sale_id: str = ""

    @property
    def gain(self) -> Decimal:
        return self.proceeds - self.cost_basis

    @property
    def term(self) -> Term:
        return term_of(self.lot.holding_start, self.sold)


@dataclass(slots=True)
class Disposal:
    """A realized sale of (part of) one lot, as it goes on Form 8949.

    ``adjustment`` is the wash-sale loss disallowed (positive, code W); ``washed_quantity``
    the shares of this disposal matched to replacement shares; ``permanent`` the part of the
    adjustment lost for good because the replacement was bought in an IRA.
    """

    sale_id: str
    account: str
    account_type: AccountType
    symbol: str
    lot_id: str
    purchase_id: str
    quantity: Decimal
    acquired: date
    holding_start: date
    sold: date
    proceeds: Decimal
    cost_basis: Decimal
    seq: int = 0
    adjustment: Decimal = ZERO
    washed_quantity: Decimal = ZERO
    permanent: Decimal = ZERO
    cause: str = "sale"

    @property
    def code(self) -> str:
        return "W" if self.washed_quantity > 0 else ""

    @property
    def gain_loss(self) -> Decimal:
        return self.proceeds - self.cost_basis + self.adjustment

    @property
    def term(self) -> Term:
        return term_of(self.holding_start, self.sold)

    @property
    def reportable(self) -> bool:
        return self.account_type is AccountType.TAXABLE


@dataclass(frozen=True, slots=True)
class LedgerAccount:
    """An account of a household in the tax ledger (the rebalancing engine's account is
    ``ballast_engine.model.Account``); ``method`` is its default lot-relief method, ``rates``
    what min-tax relief weighs gains by."""

    account_id: str
    household: str
    account_type: AccountType = AccountType.TAXABLE
    method: ReliefMethod = DEFAULT_RELIEF_METHOD
    rates: TaxRates = DEFAULT_TAX_RATES


@dataclass(frozen=True, slots=True)
class Fill:
    """A fill to apply to the ledger (the rebalancing engine's proposed trade is
    ``ballast_engine.model.Trade``).

    ``lot_ids``: for a buy, the name of the new lot (optional); for a sell, the lots to
    relieve (specific identification), which overrides ``method``. ``ref`` says where the
    trade came from ("row 3 (line 4)") so errors can name it.
    """

    trade_id: str
    account: str
    on: date
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fees: Decimal = ZERO
    lot_ids: tuple[str, ...] = ()
    sleeve: str = ""
    method: ReliefMethod | None = None
    ref: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the ledger's journal: what changed, on which lot, and why."""

    cause: str
    kind: str  # open | relieve | wash-split | wash-adjust | wash-permanent | move | action
    account: str
    lot_id: str
    quantity: Decimal = ZERO
    basis: Decimal = ZERO
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EquivalenceSet:
    """Securities that substitute for each other; ``identical`` makes them substantially
    identical for the wash-sale rule (e.g. two share classes of one fund)."""

    name: str
    members: tuple[str, ...]
    identical: bool = False


@dataclass(slots=True)
class Identity:
    """Which securities are substantially identical: the same symbol, or the members of
    one equivalence set marked identical."""

    _key: dict[str, str] = field(default_factory=dict)
    _members: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_sets(cls, sets: tuple[EquivalenceSet, ...] | list[EquivalenceSet]) -> Identity:
        ident = cls()
        for eq in sets:
            if not eq.identical:
                continue
            key = "=" + eq.name
            for symbol in eq.members:
                if symbol in ident._key and ident._key[symbol] != key:
                    raise ValueError(
                        f"{symbol} is in two identical equivalence sets: "
                        f"{ident._key[symbol][1:]} and {eq.name}"
                    )
                ident._key[symbol] = key
            ident._members[key] = tuple(dict.fromkeys(eq.members))
        return ident

    def key(self, symbol: str) -> str:
        return self._key.get(symbol, symbol)

    def members(self, symbol: str) -> tuple[str, ...]:
        key = self._key.get(symbol)
        return self._members[key] if key is not None else (symbol,)

    def identical(self, a: str, b: str) -> bool:
        return self.key(a) == self.key(b)

    def copy(self) -> Identity:
        return Identity(dict(self._key), dict(self._members))

    def rename(self, old: str, new: str) -> None:
        """Follow a symbol change: the new symbol takes the old one's place in its set."""
        key = self._key.pop(old, None)
        if key is None:
            return
        self._key[new] = key
        self._members[key] = tuple(new if m == old else m for m in self._members[key])


def days_between(a: date, b: date) -> int:
    return (b - a).days


def shift(day: date, days: int) -> date:
    return day + timedelta(days=days)
