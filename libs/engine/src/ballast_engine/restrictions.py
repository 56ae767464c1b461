"""Which of an account's restrictions bind a security, by the rule the tactical planner
applies (``tactical.apply_restrictions``): for the layers that need the answer outside a
sleeve plan (a sleeve's cash capacity, harvesting's buys and sells)."""

from __future__ import annotations

from typing import NamedTuple

from ballast_engine.model import Reference, Restriction
from ballast_engine.tactical import Member, apply_restrictions


class Binding(NamedTuple):
    """The first restriction of each kind that matches a security (``None``: none does)."""

    do_not_buy: Restriction | None
    do_not_sell: Restriction | None
    do_not_hold: Restriction | None

    @property
    def blocks_buying(self) -> bool:
        """Do-not-buy or do-not-hold: the security may not be bought."""
        return self.do_not_buy is not None or self.do_not_hold is not None

    @property
    def blocks_selling(self) -> bool:
        """Do-not-sell: the security may not be sold."""
        return self.do_not_sell is not None


def binding(symbol: str, restrictions: tuple[Restriction, ...], ref: Reference) -> Binding:
    """The restrictions of ``restrictions`` that bind ``symbol``."""
    member = Member(symbol, 0.0, 0.0, 1.0, False)
    if restrictions:
        apply_restrictions(member, restrictions, ref)
    return Binding(member.dnb, member.dns, member.dnh)
