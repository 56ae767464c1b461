"""Which sleeve of a UMA holds a position's shares: the one rule (the book of record keeps
one position per symbol; rebalancing, drift scans and the demo book all split it this way).

1. a lot that names a sleeve of the account belongs to that sleeve;
2. the rest of the position (shares in no such lot, with the lots that name no sleeve of the
   account) goes to its *home* sleeve: the first sleeve, in strategy order, whose model
   holds the symbol; else the first whose model holds an equivalent of it (same equivalence
   set: it counts toward that target rather than being sold); else the first sleeve (where
   it is sold as not in the model);
3. lots that name sleeves for more shares than the position holds are not trusted: the whole
   position, with all its lots, goes to its home sleeve.

Every share of a position lands in exactly one sleeve; a lot in at most one (a lot naming no
sleeve is in none when the lots naming sleeves already hold the whole position).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from ballast_engine.model import EquivalenceSet


@dataclass(frozen=True)
class SleeveModel:
    """A sleeve of a UMA's strategy and the symbols its model holds."""

    sleeve_id: str
    symbols: Collection[str]


@dataclass(frozen=True)
class SleeveShare:
    """The part of a position one sleeve holds: its shares and which of the position's lots
    are its own (indexes into the lots given: those naming the sleeve, then the others)."""

    sleeve_id: str
    shares: Decimal
    lots: tuple[int, ...] = ()


def equivalents_by_symbol(sets: Iterable[EquivalenceSet]) -> dict[str, frozenset[str]]:
    """Each member of an equivalence set, with its set's members."""
    return {m: frozenset(s.members) for s in sets for m in s.members}


def home_sleeve(
    symbol: str,
    sleeves: Sequence[SleeveModel],
    equivalents: Mapping[str, Collection[str]] | None = None,
) -> str:
    """The sleeve a position's shares in no sleeve's lot belong to (rule 2 above)."""
    if not sleeves:
        raise ValueError("a UMA needs at least one sleeve to hold its positions")
    for sleeve in sleeves:
        if symbol in sleeve.symbols:
            return sleeve.sleeve_id
    twins = (equivalents or {}).get(symbol, ())
    for sleeve in sleeves:
        if any(twin in sleeve.symbols for twin in twins):
            return sleeve.sleeve_id
    return sleeves[0].sleeve_id


def split_position(
    symbol: str,
    quantity: Decimal,
    lot_sleeves: Sequence[tuple[str | None, Decimal]],
    sleeves: Sequence[SleeveModel],
    equivalents: Mapping[str, Collection[str]] | None = None,
) -> list[SleeveShare]:
    """A position's shares per sleeve, in strategy order (sleeves holding none left out);
    `lot_sleeves` are its lots as (sleeve named or None, shares). A position of no shares
    (or fewer) is in no sleeve."""
    if quantity <= 0:
        return []
    known = {s.sleeve_id for s in sleeves}
    shares: dict[str, Decimal] = {}
    lots: dict[str, list[int]] = {}
    loose: list[int] = []
    for index, (sleeve_id, lot_shares) in enumerate(lot_sleeves):
        if sleeve_id is not None and sleeve_id in known:
            shares[sleeve_id] = shares.get(sleeve_id, Decimal(0)) + lot_shares
            lots.setdefault(sleeve_id, []).append(index)
        else:
            loose.append(index)
    rest = quantity - sum(shares.values(), Decimal(0))
    if rest < 0:  # the lots claim more than the position: trust the position
        shares, lots = {}, {}
        rest, loose = quantity, list(range(len(lot_sleeves)))
    if rest > 0:
        home = home_sleeve(symbol, sleeves, equivalents)
        shares[home] = shares.get(home, Decimal(0)) + rest
        lots[home] = lots.get(home, []) + loose
    return [
        SleeveShare(s.sleeve_id, shares[s.sleeve_id], tuple(lots.get(s.sleeve_id, ())))
        for s in sleeves
        if shares.get(s.sleeve_id)
    ]
