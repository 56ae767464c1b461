"""The book's lots replayed by the tax engine. Pure, no I/O.

The rules (relief methods, fees, wash sales across the household, corporate actions) are
``ballast_engine.tax``'s; this module only turns the service's stored inputs into the
engine's :class:`~ballast_engine.tax.Fill` and corporate actions, replays a household in
the canonical order, and turns the engine's lots and disposals back into rows.

Why a replay and not an incremental update: the wash-sale rule makes a sale depend on
purchases of the 30 days after it, in any account of the household, and a fill may arrive
for a date earlier than fills already applied. Replaying the household's inputs in date
order (as the engine's notes prescribe) gives the same lots whatever the arrival order,
and the derived rows (lots, realized gains) are rewritten from the replay in the same
transaction as the event, so an event is applied entirely or not at all.

Canonical order: by date; within a day corporate actions first (they take effect at the
opening of their date, e.g. a split's ex-date), then opening lots, fills, sleeve transfers
and adjustments (the custodian's figures accepted) in arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import Any

from ballast_engine.tax import (
    DEFAULT_RELIEF_METHOD,
    AccountType,
    Adjustment,
    AdjustmentKind,
    CashDividend,
    CashMerger,
    Change,
    CorporateAction,
    Disposal,
    EquivalenceSet,
    Fill,
    Identity,
    LedgerAccount,
    Lot,
    ReliefMethod,
    Side,
    SpinOff,
    Split,
    StockMerger,
    SymbolChange,
    TaxError,
    TaxInputError,
    TaxLedger,
)

ZERO = Decimal(0)
OPENING = "opening"
FILL = "fill"
MOVE = "move"
ADJUST = "adjust"
# how an adjustment is stored (``method``) -> the engine's adjustment; "scale" is a quantity
# whose basis is ours scaled per share (the custodian gave none)
ADJUSTMENTS = {
    "quantity": AdjustmentKind.QUANTITY,
    "scale": AdjustmentKind.QUANTITY,
    "basis": AdjustmentKind.BASIS,
    "date": AdjustmentKind.DATE,
    "open": AdjustmentKind.OPEN,
    "close": AdjustmentKind.CLOSE,
}
RECONCILIATION = "reconciliation"  # the cause of lots an adjustment opens
DEFAULT_METHOD = DEFAULT_RELIEF_METHOD.value  # a sell naming no lot, of an account never described


def identity_of(groups: Iterable[Sequence[str]]) -> Identity:
    """Which securities are substantially identical, from the members of the equivalence
    sets marked identical. Sets sharing a member are one group (if A is identical to B and
    B to C, a loss on A is washed by a purchase of C), so overlapping sets never conflict.
    """
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for members in groups:
        first = None
        for symbol in members:
            r = root(symbol)
            if first is None:
                first = r
            elif r != first:
                parent[r] = first
    merged: dict[str, list[str]] = {}
    for symbol in parent:
        merged.setdefault(root(symbol), []).append(symbol)
    sets = [
        EquivalenceSet(min(ms), tuple(sorted(ms)), identical=True)
        for ms in merged.values()
        if len(ms) > 1
    ]
    return Identity.from_sets(sorted(sets, key=lambda e: e.name))


def singleton_household(account_id: str) -> str:
    """The household of an account account-svc has not told us about: itself alone."""
    return f"account:{account_id}"


@dataclass(frozen=True, slots=True)
class AccountFacts:
    account_id: str
    household: str
    account_type: str = "taxable"  # taxable | ira


@dataclass(frozen=True, slots=True)
class Input:
    """An opening lot, a fill, a sleeve transfer or an adjustment as stored (``seq`` =
    arrival order). An adjustment names its lot in ``lot_name``, its kind in ``method``
    (see ``ADJUSTMENTS``), its quantity in ``quantity``, its basis in ``fees`` and its
    acquisition date in ``acquired_on``."""

    seq: int
    account_id: str
    kind: str  # opening | fill | move | adjust
    ref: str  # fill id, opening lot id, sleeve transfer id, reconciliation:<break id>
    on: date
    symbol: str
    side: str  # buy | sell
    quantity: Decimal
    price: Decimal
    fees: Decimal = ZERO
    lot_name: str | None = None  # a buy's lot id
    lot_ids: tuple[str, ...] = ()  # the lots a sell names
    method: str | None = None  # a sell's relief method when no lot is named
    sleeve: str = ""  # a fill's sleeve; a move's source sleeve
    to_sleeve: str | None = None  # a move's target sleeve
    acquired_on: date | None = None  # an adjustment's acquisition date

    @property
    def trade_id(self) -> str:
        """Unique within the household: a fill id and a reconciliation break are unique, an
        opening lot id and a transfer id are unique within their account."""
        if self.kind in (FILL, ADJUST):
            return self.ref
        return f"{self.kind}:{self.account_id}:{self.ref}"

    @property
    def cause(self) -> str:
        """The cause the engine journals this input's changes under."""
        if self.kind == MOVE:
            return f"move {self.trade_id}"
        if self.kind == ADJUST:
            return f"adjust {self.trade_id}"
        return f"trade {self.trade_id}"


@dataclass(frozen=True, slots=True)
class ActionInput:
    action_id: str
    on: date
    action: CorporateAction

    @property
    def cause(self) -> str:
        return f"action {self.action_id}"


def to_trade(item: Input) -> Fill:
    """The engine trade of an opening lot or a fill.

    An opening lot is a purchase on its acquisition date of its quantity for its basis:
    it is stored with price 0 and its basis as ``fees``, so the engine books exactly that
    basis (``quantity * 0 + fees``).
    """
    if item.kind == OPENING:
        return Fill(
            trade_id=item.trade_id,
            account=item.account_id,
            on=item.on,
            symbol=item.symbol,
            side=Side.BUY,
            quantity=item.quantity,
            price=ZERO,
            fees=item.fees,
            lot_ids=(item.lot_name or item.ref,),
            sleeve=item.sleeve,
            ref=f"opening lot {item.ref} of account {item.account_id}",
        )
    side = Side(item.side)
    if side is Side.BUY:
        lot_ids: tuple[str, ...] = (item.lot_name or f"fill-{item.ref}",)
        method = None
    else:
        lot_ids = item.lot_ids
        method = ReliefMethod(item.method) if item.method and not lot_ids else None
    return Fill(
        trade_id=item.trade_id,
        account=item.account_id,
        on=item.on,
        symbol=item.symbol,
        side=side,
        quantity=item.quantity,
        price=item.price,
        fees=item.fees,
        lot_ids=lot_ids,
        sleeve=item.sleeve,
        method=method,
        ref=f"fill {item.ref}",
    )


def adopt_unassigned(ledger: TaxLedger, item: Input) -> None:
    """Before a sell in a sleeve: lots of the security that belong to no sleeve (opening
    lots stated without one) join the sleeve the sell is for, when they are needed: the
    lots it names, or all of them when the sleeve holds fewer shares than it sells. This
    is the rebalancer's rule (a position without sleeve information belongs to the sleeve
    whose model holds it), made explicit in the ledger as a move (no taxable event)."""
    if item.kind != FILL or item.side != "sell" or not item.sleeve:
        return
    loose = [lot for lot in ledger.lots(item.account_id, item.symbol) if lot.sleeve == ""]
    if item.lot_ids:
        loose = [lot for lot in loose if any(lot_matches(lot.lot_id, n) for n in item.lot_ids)]
    elif ledger.position(item.account_id, item.symbol, item.sleeve) >= item.quantity:
        return
    if loose:
        ledger.move(
            item.account_id,
            item.symbol,
            sum((lot.quantity for lot in loose), ZERO),
            from_sleeve="",
            to_sleeve=item.sleeve,
            lot_ids=[lot.lot_id for lot in loose],
            cause=item.cause,
        )


def lot_matches(lot_id: str, name: str) -> bool:
    """A named lot covers the pieces the ledger split off it (``<name>/<n>``)."""
    return lot_id == name or lot_id.startswith(name + "/")


def to_adjustment(item: Input) -> Adjustment:
    """The engine adjustment of a stored ``adjust`` input (an unknown kind is refused)."""
    kind = ADJUSTMENTS.get(item.method or "")
    if kind is None:
        raise TaxInputError(
            f"unknown adjustment {item.method!r}", ref=f"adjustment {item.ref}", field="method"
        )
    given_basis = item.method != "scale" and kind in (
        AdjustmentKind.QUANTITY,
        AdjustmentKind.BASIS,
        AdjustmentKind.OPEN,
    )
    return Adjustment(
        adjustment_id=item.trade_id,
        account=item.account_id,
        on=item.on,
        symbol=item.symbol,
        lot_id=item.lot_name or "",
        kind=kind,
        quantity=item.quantity if kind in (AdjustmentKind.QUANTITY, AdjustmentKind.OPEN) else None,
        basis=item.fees if given_basis else None,
        acquired=item.acquired_on,
        ref=f"adjustment {item.ref} of account {item.account_id}",
    )


def apply_input(ledger: TaxLedger, item: Input) -> None:
    """Apply an opening lot, a fill, a sleeve transfer or an adjustment to ``ledger``."""
    if item.kind == ADJUST:
        ledger.adjust(to_adjustment(item))
        return
    if item.kind == MOVE:
        try:
            ledger.move(
                item.account_id,
                item.symbol,
                item.quantity,
                from_sleeve=item.sleeve,
                to_sleeve=item.to_sleeve or "",
                lot_ids=item.lot_ids,
                cause=item.cause,
            )
        except TaxError as err:
            raise type(err)(err.problem, ref=f"transfer {item.ref}", field=err.field) from None
        return
    adopt_unassigned(ledger, item)
    trade = to_trade(item)
    if trade.side is Side.SELL and trade.lot_ids:
        trade = replace(trade, lot_ids=still_open(ledger, item))
    ledger.apply(trade)


def still_open(ledger: TaxLedger, item: Input) -> tuple[str, ...]:
    """The lots a sell names that are still open in its sleeve. An order filled in parts
    names the same lots in every partial fill; the lots an earlier part closed are skipped
    (the open ones must still cover the fill). If none is open, all are kept, so that the
    engine names the first one in its error."""
    lots = [lot for lot in ledger.lots(item.account_id, item.symbol) if lot.sleeve == item.sleeve]
    named = tuple(n for n in item.lot_ids if any(lot_matches(lot.lot_id, n) for lot in lots))
    return named or item.lot_ids


def to_engine_account(facts: AccountFacts) -> LedgerAccount:
    return LedgerAccount(facts.account_id, facts.household, AccountType(facts.account_type))


@dataclass(slots=True)
class Replay:
    """A household's ledger after the replay, and which actions took effect in it."""

    ledger: TaxLedger
    applied_actions: set[str] = field(default_factory=set)
    last_day: date | None = None  # of the inputs and actions applied

    def changes(self, cause: str) -> list[Change]:
        return [c for c in self.ledger.journal if c.cause == cause]

    def disposals_of(self, sale_id: str, account: str | None = None) -> list[Disposal]:
        return [
            d
            for d in self.ledger.disposals
            if d.sale_id == sale_id and (account is None or d.account == account)
        ]

    def income_of(self, action_id: str, account: str) -> Decimal:
        return sum(
            (
                i.amount
                for i in self.ledger.income
                if i.action_id == action_id and i.account == account
            ),
            ZERO,
        )


def replay_household(
    accounts: Iterable[AccountFacts],
    inputs: Iterable[Input],
    actions: Iterable[ActionInput] = (),
    *,
    identity: Identity | None = None,
) -> Replay:
    """Replay one household's inputs (and the corporate actions of securities it holds at
    their date) in the canonical order. Raises the engine's ``TaxError`` naming the input
    that cannot be applied (a sell larger than the position, a lot that is not open...)."""
    ledger = TaxLedger([to_engine_account(a) for a in accounts], identity=identity)
    events: list[tuple[date, int, int, Input | ActionInput]] = []
    for n, act in enumerate(actions):
        events.append((act.on, 0, n, act))
    for item in inputs:
        events.append((item.on, 1, item.seq, item))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    out = Replay(ledger)
    for _, _, _, event in events:
        if isinstance(event, ActionInput):
            # An action concerns this household only if it holds the security that day.
            if ledger.lots(symbol=event.action.symbol):
                ledger.apply_action(event.action)
                out.applied_actions.add(event.action_id)
                out.last_day = event.on
        else:
            apply_input(ledger, event)
            out.last_day = event.on
    return out


def symbol_family(
    symbols: Iterable[str], actions: Iterable[ActionInput], identity: Identity | None = None
) -> set[str]:
    """The securities whose lots and sales can depend on trades in ``symbols``: the
    symbols themselves and, transitively, the symbols corporate actions link them to
    (symbol change, stock merger, spin-off) and those ``identity`` makes substantially
    identical to them (members of one identical equivalence set).

    The engine keeps positions, wash-sale windows and matching per security and its
    identical securities, so replaying a household's inputs and actions of one family
    gives that family's lots and sales exactly as a replay of everything would (only the
    engine's global sequence numbers differ; they keep their relative order, which is all
    they are used for).
    """
    family = set(symbols)
    links = [(a.action.symbol, getattr(a.action, "new_symbol", a.action.symbol)) for a in actions]
    if identity is not None:
        for symbol in list(family) + [s for link in links for s in link]:
            members = identity.members(symbol)
            links += [(members[0], m) for m in members[1:]]
    grew = True
    while grew:
        grew = False
        for old, new in links:
            if (old in family) != (new in family):
                family |= {old, new}
                grew = True
    return family


# --- corporate actions ------------------------------------------------------------------------


ACTION_KINDS = (
    "split",
    "reverse-split",
    "symbol-change",
    "cash-merger",
    "stock-merger",
    "spin-off",
    "cash-dividend",
)


def build_action(terms: dict[str, Any]) -> CorporateAction:
    """The engine's corporate action from stored terms (already validated by the API)."""
    kind = terms["type"]
    common = {
        "action_id": terms["action_id"],
        "symbol": terms["symbol"],
        "on": date.fromisoformat(str(terms["on"])),
    }

    def dec(name: str, default: str | None = None) -> Decimal:
        value = terms.get(name)
        return Decimal(str(value if value is not None else default))

    if kind in ("split", "reverse-split"):
        return Split(
            **common,
            numerator=int(terms["numerator"]),
            denominator=int(terms["denominator"]),
            cash_price=dec("cash_price", "0"),
            share_quantum=dec("share_quantum", "1"),
        )
    if kind == "symbol-change":
        return SymbolChange(**common, new_symbol=terms["new_symbol"])
    if kind == "cash-merger":
        return CashMerger(**common, cash_per_share=dec("cash_per_share"))
    if kind == "stock-merger":
        return StockMerger(
            **common,
            new_symbol=terms["new_symbol"],
            ratio=dec("ratio"),
            cash_price=dec("cash_price", "0"),
            share_quantum=dec("share_quantum", "1"),
        )
    if kind == "spin-off":
        return SpinOff(
            **common,
            new_symbol=terms["new_symbol"],
            ratio=dec("ratio"),
            basis_percent=dec("basis_percent"),
            cash_price=dec("cash_price", "0"),
            share_quantum=dec("share_quantum", "1"),
        )
    if kind == "cash-dividend":
        return CashDividend(**common, per_share=dec("per_share"))
    raise ValueError(f"unknown corporate action type {kind!r}")


# --- rows out -----------------------------------------------------------------------------------


def lot_rows(
    lots: Sequence[Lot], origins: dict[str, tuple[str, str | None]]
) -> list[dict[str, Any]]:
    """Rows of the ``lots`` table; ``origins`` maps an engine purchase id to (cause,
    fill id) of the input that opened it."""
    rows = []
    for lot in lots:
        cause, fill_id = origins.get(lot.purchase_id, ("opening-balance", None))
        rows.append(
            {
                "account_id": lot.account,
                "lot_id": lot.lot_id,
                "seq": lot.seq,
                "symbol": lot.symbol,
                "quantity": lot.quantity,
                "cost_basis": lot.cost_basis,
                "acquired_on": lot.acquired,
                "holding_start": lot.holding_start,
                "cause": cause,
                "fill_id": fill_id,
                "wash_adjustment": lot.wash_adjustment,
                "replacement": lot.replacement,
                "purchase_id": lot.purchase_id,
                "sleeve": lot.sleeve,
            }
        )
    return rows


def gain_rows(disposals: Sequence[Disposal], fill_ids: dict[str, str]) -> list[dict[str, Any]]:
    """Rows of the ``realized_gains`` table; ``fill_ids`` maps an engine sale id (trade id)
    to the fill id (a corporate action's sales carry the action id instead)."""
    rows = []
    for d in disposals:
        from_fill = d.sale_id in fill_ids
        rows.append(
            {
                "account_id": d.account,
                "fill_id": fill_ids.get(d.sale_id, d.sale_id),
                "lot_id": d.lot_id,
                "symbol": d.symbol,
                "quantity": d.quantity,
                "proceeds": d.proceeds,
                "cost_basis": d.cost_basis,
                "gain": d.proceeds - d.cost_basis,
                "term": d.term.value,
                "acquired_on": d.acquired,
                "holding_start": d.holding_start,
                "sold_on": d.sold,
                "adjustment": d.adjustment,
                "washed_quantity": d.washed_quantity,
                "permanent": d.permanent,
                "account_type": d.account_type.value,
                "cause": "fill" if from_fill else "corporate-action",
                "seq": d.seq,
            }
        )
    return rows


# The columns of a stored realized gain and of a stored lot the engine's objects are made
# of, read by attribute (entities, Core rows) or by name (driver records) in one go.
_GAIN_COLUMNS = (
    "fill_id",
    "account_id",
    "account_type",
    "symbol",
    "lot_id",
    "quantity",
    "acquired_on",
    "holding_start",
    "sold_on",
    "proceeds",
    "cost_basis",
    "seq",
    "adjustment",
    "washed_quantity",
    "permanent",
    "cause",
)
_LOT_COLUMNS = (
    "lot_id",
    "account_id",
    "symbol",
    "quantity",
    "cost_basis",
    "acquired_on",
    "holding_start",
    "purchase_id",
    "sleeve",
    "seq",
    "replacement",
    "wash_adjustment",
)
_gain_attributes, _gain_values = attrgetter(*_GAIN_COLUMNS), itemgetter(*_GAIN_COLUMNS)
_lot_attributes, _lot_values = attrgetter(*_LOT_COLUMNS), itemgetter(*_LOT_COLUMNS)


def disposal_of(row: Any) -> Disposal:
    """The engine's disposal of a stored realized-gain row (for its code, term, gain/loss
    and the Form 8949 rows)."""
    return _disposal(_gain_attributes(row))


def disposal_of_record(record: Any) -> Disposal:
    """:func:`disposal_of` of a driver record (columns by name)."""
    return _disposal(_gain_values(record))


def _disposal(v: tuple[Any, ...]) -> Disposal:
    return Disposal(
        sale_id=v[0],
        account=v[1],
        account_type=AccountType(v[2]),
        symbol=v[3],
        lot_id=v[4],
        purchase_id="",
        quantity=v[5],
        acquired=v[6],
        holding_start=v[7],
        sold=v[8],
        proceeds=v[9],
        cost_basis=v[10],
        seq=v[11],
        adjustment=v[12],
        washed_quantity=v[13],
        permanent=v[14],
        cause=v[15],
    )


def lot_of(row: Any) -> Lot:
    """The engine's lot of a stored ``lots`` row (for valuations)."""
    return _lot(_lot_attributes(row))


def lot_of_record(record: Any) -> Lot:
    """:func:`lot_of` of a driver record (columns by name)."""
    return _lot(_lot_values(record))


def _lot(v: tuple[Any, ...]) -> Lot:
    return Lot(
        lot_id=v[0],
        account=v[1],
        symbol=v[2],
        quantity=v[3],
        cost_basis=v[4],
        acquired=v[5],
        holding_start=v[6],
        purchase_id=v[7],
        sleeve=v[8],
        seq=v[9],
        replacement=v[10],
        wash_adjustment=v[11],
    )


JOURNAL_KINDS = {
    "open": "lot-open",
    "relieve": "lot-relieve",
    "wash-split": "wash-split",
    "wash-adjust": "wash-adjust",
    "wash-permanent": "wash-permanent",
    "move": "lot-move",
    "action": "action",
    "adjust": "lot-adjust",
    "close": "lot-relieve",
}


def own_cash(cash: Decimal, sleeves: Mapping[str, Decimal]) -> Decimal:
    """The account's own cash (in no sleeve): its cash less what its named sleeves hold."""
    return cash - sum(sleeves.values(), ZERO)


def cash_entry(
    account: str, cause: str, ref: str | None, amount: Decimal, sleeve: str = ""
) -> dict[str, Any]:
    """A ledger entry of cash moved in (or out of, negative) a sleeve ('' = the account's
    own cash); ``ref`` is the fill, action or transfer."""
    return {
        "account_id": account,
        "cause": cause,
        "fill_id": ref,  # the ledger's reference column: a fill, action or transfer id
        "kind": "cash",
        "symbol": None,
        "lot_id": None,
        "quantity": None,
        "amount": amount,
        "sleeve": sleeve,
    }


def journal_entries(changes: Sequence[Change], cause: str, ref: str | None) -> list[dict[str, Any]]:
    """Ledger entries (the book's own journal) of the engine's changes for one event."""
    return [
        {
            "account_id": c.account,
            "cause": cause,
            "fill_id": ref,
            "kind": JOURNAL_KINDS.get(c.kind, c.kind)[:16],
            "symbol": None,
            "lot_id": c.lot_id,
            "quantity": c.quantity,
            "amount": c.basis,
            "sleeve": "",
        }
        for c in changes
    ]


# --- the incremental path -------------------------------------------------------------------


@dataclass(slots=True)
class SymbolState:
    """What the engine needs of a household to apply a fill of one security in date order:
    the security's open lots in the household, its loss sales a purchase could still wash,
    the lot names its accounts have used, the household's last day and sequence counter."""

    household: str
    accounts: list[AccountFacts]
    symbol: str
    lots: list[Lot]  # of the security and the securities identical to it
    open_losses: list[Disposal]  # taxable loss sales of the last 30 days, not fully matched
    names: dict[str, set[str]]
    last_day: date | None
    seq: int
    identity: Identity | None = None  # substantially identical securities (None: same symbol)

    @property
    def symbols(self) -> tuple[str, ...]:
        """The security and those substantially identical to it."""
        return self.identity.members(self.symbol) if self.identity else (self.symbol,)


def open_loss_left(d: Disposal) -> tuple[Decimal, Decimal]:
    """(shares, loss) of a loss sale no replacement has absorbed yet: every match adds its
    shares to ``washed_quantity`` and its disallowed loss to ``adjustment``."""
    return d.quantity - d.washed_quantity, (d.cost_basis - d.proceeds) - d.adjustment


def restore_ledger(state: SymbolState) -> TaxLedger:
    """A ledger holding exactly ``state``, as a replay of the household's inputs would
    have left it for that security (``test_book.py`` checks the two agree)."""
    return TaxLedger.restore(
        [to_engine_account(a) for a in state.accounts],
        identity=state.identity,
        lots=state.lots,
        open_losses=[(d, state.household, *open_loss_left(d)) for d in state.open_losses],
        names=state.names,
        last_days={state.household: state.last_day} if state.last_day is not None else {},
        seq=state.seq,
    )
