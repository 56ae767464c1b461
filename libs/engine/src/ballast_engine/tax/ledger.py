"""The in-memory tax-lot ledger of a set of households: fills in, lots and disposals out.

:class:`TaxLedger` applies trades in date order (per household), relieves lots with the
pure functions of :mod:`ballast_engine.tax.lots`, applies the wash-sale rule across the
household with :mod:`ballast_engine.tax.wash`, and journals every change with its cause.
Each trade or corporate action is all-or-nothing: everything is validated before the
ledger changes. :func:`replay` sorts trades into the canonical order (date, then arrival
within the day) so the result does not depend on the order in which days arrive; a
service that receives a late fill replays the household.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

from ballast_engine.tax.adjustments import (
    Adjustment,
    AdjustmentKind,
    adjust_pieces,
    changes_of,
    is_piece,
    opened_lot,
    validate,
)
from ballast_engine.tax.corporate import (
    CorporateAction,
    StockMerger,
    SymbolChange,
    apply_to_lots,
)
from ballast_engine.tax.errors import (
    CorporateActionError,
    InsufficientQuantityError,
    TaxError,
    TaxInputError,
)
from ballast_engine.tax.lots import (
    LotValuation,
    move_lots,
    open_lot,
    relieve,
    split_lot,
    value_lots,
)
from ballast_engine.tax.model import (
    WASH_WINDOW_DAYS,
    ZERO,
    AccountType,
    Change,
    Disposal,
    Fill,
    Identity,
    LedgerAccount,
    Lot,
    Relief,
    ReliefMethod,
    Side,
    Term,
    shift,
)
from ballast_engine.tax.wash import (
    BuyBlock,
    LossWindow,
    SellBlock,
    allocate_loss,
    buy_blocks,
    replacement_candidates,
    sell_blocks,
    wash_replacement,
)


@dataclass(slots=True)
class _OpenLoss:
    """A loss disposal whose shares are not all matched to replacements yet."""

    disposal: Disposal
    household: str
    held_days: int
    quantity: Decimal
    loss: Decimal


@dataclass(frozen=True, slots=True)
class Income:
    """Cash income booked by a corporate action (a cash dividend)."""

    action_id: str
    account: str
    symbol: str
    on: date
    amount: Decimal
    kind: str = "dividend"


@dataclass(frozen=True, slots=True)
class RealizedSummary:
    """Realized gains and losses (after wash-sale adjustments), split by term."""

    short_term: Decimal
    long_term: Decimal
    disallowed: Decimal
    permanently_disallowed: Decimal

    @property
    def total(self) -> Decimal:
        return self.short_term + self.long_term


def _with_ref(err: TaxError, ref: str) -> TaxError:
    if err.ref or not ref:
        return err
    return type(err)(err.problem, ref=ref, field=err.field)


class TaxLedger:
    """Open lots, disposals and the journal of every change, for the given accounts.

    Args:
        accounts: the accounts (with household, type and default relief method).
        identity: which securities are substantially identical (default: same symbol).
    """

    def __init__(self, accounts: Iterable[LedgerAccount] = (), *, identity: Identity | None = None):
        # A copy: symbol changes rename securities in this ledger's identity only.
        self.identity = identity.copy() if identity is not None else Identity()
        self.accounts: dict[str, LedgerAccount] = {}
        self.disposals: list[Disposal] = []
        self.journal: list[Change] = []
        self.income: list[Income] = []
        self._households: dict[str, list[str]] = {}
        self._positions: dict[str, dict[str, list[Lot]]] = {}
        self._losses: dict[tuple[str, str], list[_OpenLoss]] = {}
        self._last_day: dict[str, date] = {}
        self._names: dict[str, set[str]] = {}
        self._split_count: dict[tuple[str, str], int] = {}
        self._actions: dict[str, list[Disposal]] = {}
        self._seq = 0
        for account in accounts:
            self.add_account(account)

    @classmethod
    def restore(
        cls,
        accounts: Iterable[LedgerAccount],
        *,
        identity: Identity | None = None,
        lots: Iterable[Lot] = (),
        open_losses: Iterable[tuple[Disposal, str, Decimal, Decimal]] = (),
        names: Mapping[str, Iterable[str]] | None = None,
        last_days: Mapping[str, date] | None = None,
        seq: int = 0,
    ) -> TaxLedger:
        """A ledger in a stored state, as replaying the inputs that led to it would leave it
        (a book of record keeps the state and applies new inputs to it).

        Args:
            accounts: the accounts the state covers.
            identity: which securities are substantially identical.
            lots: the open lots (any order; kept in acquisition order).
            open_losses: loss sales whose shares are not all matched to replacements yet,
                each ``(disposal, household, quantity left, loss left)``.
            names: lot names already used, per account (they stay unique).
            last_days: per household, the last day applied (a later input before it is a
                late arrival).
            seq: the sequence counter (the next lot or disposal gets a higher number).
        """
        ledger = cls(accounts, identity=identity)
        for lot in sorted(lots, key=lambda x: (x.acquired, x.seq, x.lot_id)):
            ledger._positions[lot.account].setdefault(lot.symbol, []).append(lot)
        for disposal, household, quantity, loss in sorted(
            open_losses, key=lambda x: (x[0].sold, x[0].seq)
        ):
            if quantity > 0:
                held = (disposal.sold - disposal.holding_start).days
                ledger._losses.setdefault((household, disposal.symbol), []).append(
                    _OpenLoss(disposal, household, held, quantity, loss)
                )
        for account, used in (names or {}).items():
            if account in ledger._names:
                ledger._names[account] |= set(used)
        ledger._last_day.update(last_days or {})
        ledger._seq = seq
        return ledger

    @property
    def seq(self) -> int:
        """The sequence counter: the next lot or disposal gets a higher number."""
        return self._seq

    # ----------------------------------------------------------------- accounts, queries
    def add_account(self, account: LedgerAccount) -> None:
        known = self.accounts.get(account.account_id)
        if known is not None:
            if known != account:
                raise TaxInputError(
                    f"account {account.account_id} is already known as {known.household}/"
                    f"{known.account_type}/{known.method}",
                    field="account",
                )
            return
        self.accounts[account.account_id] = account
        self._households.setdefault(account.household, []).append(account.account_id)
        self._positions[account.account_id] = {}
        self._names[account.account_id] = set()

    def lots(self, account: str | None = None, symbol: str | None = None) -> list[Lot]:
        """Open lots, optionally of one account and/or security, in acquisition order."""
        accounts = [account] if account is not None else sorted(self._positions)
        out: list[Lot] = []
        for acct in accounts:
            positions = self._positions.get(acct, {})
            symbols = [symbol] if symbol is not None else sorted(positions)
            for sym in symbols:
                out.extend(positions.get(sym, ()))
        out.sort(key=lambda lot: (lot.account, lot.symbol, lot.acquired, lot.seq, lot.lot_id))
        return out

    def household_lots(self, household: str) -> list[Lot]:
        return [
            lot
            for acct in self._households.get(household, ())
            for lots in self._positions[acct].values()
            for lot in lots
        ]

    def position(self, account: str, symbol: str, sleeve: str | None = None) -> Decimal:
        lots = self._positions.get(account, {}).get(symbol, ())
        return sum((lot.quantity for lot in lots if sleeve in (None, lot.sleeve)), ZERO)

    def unrealized(
        self, account: str, prices: Mapping[str, Decimal], on: date
    ) -> list[LotValuation]:
        """Unrealized gain/loss of each open lot of ``account`` at ``prices``."""
        return value_lots(self.lots(account), prices, on)

    def realized(self, account: str | None = None, year: int | None = None) -> RealizedSummary:
        """Realized gain by term after wash-sale adjustments (taxable accounts only)."""
        st = lt = dis = perm = ZERO
        for d in self.disposals:
            if not d.reportable or (account is not None and d.account != account):
                continue
            if year is not None and d.sold.year != year:
                continue
            if d.term is Term.SHORT:
                st += d.gain_loss
            else:
                lt += d.gain_loss
            dis += d.adjustment
            perm += d.permanent
        return RealizedSummary(st, lt, dis, perm)

    def loss_windows(self, household: str, on: date) -> list[LossWindow]:
        """The household's loss sales whose shares a purchase on ``on`` could still wash."""
        out: list[LossWindow] = []
        for (hh, _sym), losses in sorted(self._losses.items()):
            if hh != household:
                continue
            for ol in losses:
                d = ol.disposal
                if ol.quantity > 0 and d.sold <= on <= shift(d.sold, WASH_WINDOW_DAYS):
                    out.append(
                        LossWindow(d.sale_id, d.account, d.symbol, d.sold, ol.quantity, ol.loss)
                    )
        return out

    def buy_blocks(self, account: str, on: date) -> list[BuyBlock]:
        """Securities ``account`` may not buy on ``on`` without washing a household loss."""
        hh = self._account_of(account).household
        return buy_blocks(self.loss_windows(hh, on), on, self.identity)

    def sell_blocks(
        self, account: str, on: date, prices: Mapping[str, Decimal] | None = None
    ) -> list[SellBlock]:
        """Lots of ``account`` that would be washed by recent household purchases if sold at
        a loss on ``on`` (only lots at a loss when ``prices`` is given)."""
        acct = self._account_of(account)
        if acct.account_type is AccountType.IRA:
            return []
        return sell_blocks(
            self.lots(account),
            self.household_lots(acct.household),
            on,
            identity=self.identity,
            prices=prices,
        )

    # ----------------------------------------------------------------- trades
    def apply(self, trade: Fill) -> list[Disposal]:
        """Apply one fill (all-or-nothing). Returns the disposals a sell created.

        Raises:
            TaxInputError: unknown account, bad quantity/price/fees, duplicate lot name,
                a trade dated before one already applied for the household.
            InsufficientQuantityError: a sell larger than the position (or named lots).
            UnknownLotError: a named lot that is not open.
        """
        try:
            acct = self._account_of(trade.account)
            if trade.quantity <= 0:
                raise TaxInputError(
                    f"quantity must be positive, got {trade.quantity}", field="quantity"
                )
            if trade.price < 0:
                raise TaxInputError(f"price must not be negative, got {trade.price}", field="price")
            if trade.fees < 0:
                raise TaxInputError(f"fees must not be negative, got {trade.fees}", field="fees")
            last = self._last_day.get(acct.household)
            if last is not None and trade.on < last:
                raise TaxInputError(
                    f"trade dated {trade.on} arrives after a {last} trade of household "
                    f"{acct.household}: replay the household in date order",
                    field="date",
                )
            if trade.side is Side.BUY:
                self._buy(acct, trade)
                result: list[Disposal] = []
            else:
                result = self._sell(acct, trade)
        except TaxError as err:
            raise _with_ref(err, trade.ref) from None
        self._last_day[acct.household] = trade.on
        return result

    def _buy(self, acct: LedgerAccount, trade: Fill) -> None:
        name = trade.lot_ids[0] if trade.lot_ids else trade.trade_id
        if name in self._names[acct.account_id]:
            raise TaxInputError(
                f"lot {name!r} already exists in account {acct.account_id}", field="lot"
            )
        self._seq += 1
        lot = open_lot(
            lot_id=name,
            account=acct.account_id,
            symbol=trade.symbol,
            quantity=trade.quantity,
            price=trade.price,
            acquired=trade.on,
            fees=trade.fees,
            purchase_id=trade.trade_id,
            sleeve=trade.sleeve,
            seq=self._seq,
        )
        # Validation is over: from here on the ledger changes.
        self._names[acct.account_id].add(name)
        cause = f"trade {trade.trade_id}"
        self.journal.append(
            Change(cause, "open", acct.account_id, name, lot.quantity, lot.cost_basis)
        )
        pieces: list[Lot] = []
        rest: Lot | None = lot
        for ol in self._open_losses(acct.household, trade.symbol, trade.on):
            if rest is None:
                break
            absorbed, rest = self._absorb(ol, rest, cause)
            if absorbed is not None:
                pieces.append(absorbed)
        if rest is not None:
            pieces.append(rest)
        self._positions[acct.account_id].setdefault(trade.symbol, []).extend(pieces)

    def _sell(self, acct: LedgerAccount, trade: Fill) -> list[Disposal]:
        position = self._positions[acct.account_id].get(trade.symbol, [])
        in_sleeve = [lot for lot in position if lot.sleeve == trade.sleeve]
        if not in_sleeve:
            raise InsufficientQuantityError(
                f"cannot sell {trade.quantity} {trade.symbol}: no open position in account "
                f"{acct.account_id}" + (f" sleeve {trade.sleeve}" if trade.sleeve else ""),
                field="quantity",
            )
        method = trade.method or acct.method
        reliefs, remaining = relieve(
            in_sleeve,
            trade.quantity,
            method,
            price=trade.price,
            sold=trade.on,
            fees=trade.fees,
            lot_ids=trade.lot_ids,
            sale_id=trade.trade_id,
            rates=acct.rates,
        )
        others = [lot for lot in position if lot.sleeve != trade.sleeve]
        self._set_position(acct.account_id, trade.symbol, others + remaining)
        return self._realize(acct, reliefs, f"trade {trade.trade_id}", wash=True)

    def _realize(
        self, acct: LedgerAccount, reliefs: Sequence[Relief], cause: str, *, wash: bool
    ) -> list[Disposal]:
        out: list[Disposal] = []
        for r in reliefs:
            self._seq += 1
            d = Disposal(
                sale_id=r.sale_id,
                account=acct.account_id,
                account_type=acct.account_type,
                symbol=r.lot.symbol,
                lot_id=r.lot.lot_id,
                purchase_id=r.lot.purchase_id,
                quantity=r.quantity,
                acquired=r.lot.acquired,
                holding_start=r.lot.holding_start,
                sold=r.sold,
                proceeds=r.proceeds,
                cost_basis=r.cost_basis,
                seq=self._seq,
                cause=cause,
            )
            self.disposals.append(d)
            out.append(d)
            self.journal.append(
                Change(cause, "relieve", acct.account_id, r.lot.lot_id, -r.quantity, -r.cost_basis)
            )
            if wash and acct.account_type is AccountType.TAXABLE and r.gain < 0:
                self._wash_sale(acct, r, d, cause)
        return out

    def _wash_sale(self, acct: LedgerAccount, r: Relief, d: Disposal, cause: str) -> None:
        ol = _OpenLoss(d, acct.household, (r.sold - r.lot.holding_start).days, r.quantity, -r.gain)
        members = self.identity.members(r.lot.symbol)
        candidates = replacement_candidates(
            self._household_symbol_lots(acct.household, members),
            members,
            sold=r.sold,
            exclude_purchase=r.lot.purchase_id,
        )
        for cand in candidates:
            if ol.quantity <= 0:
                break
            absorbed, rest = self._absorb(ol, cand, cause)
            self._replace_lot(cand, [x for x in (absorbed, rest) if x is not None])
        if ol.quantity > 0:
            self._losses.setdefault((acct.household, r.lot.symbol), []).append(ol)

    def _absorb(self, ol: _OpenLoss, lot: Lot, cause: str) -> tuple[Lot | None, Lot | None]:
        """Match open loss shares to ``lot``: (the absorbing part, the rest of the lot)."""
        matches, ol.quantity, ol.loss = allocate_loss(
            ol.quantity, ol.loss, [(lot.lot_id, lot.quantity)]
        )
        if not matches:
            return None, lot
        m = matches[0]
        rest: Lot | None = None
        part = lot
        if m.quantity < lot.quantity:
            part, rest = split_lot(lot, m.quantity, self._split_name(lot))
            self._names[lot.account].add(part.lot_id)
            self.journal.append(
                Change(
                    cause,
                    "wash-split",
                    lot.account,
                    lot.lot_id,
                    m.quantity,
                    part.cost_basis,
                    part.lot_id,
                )
            )
        ira = self.accounts[lot.account].account_type is AccountType.IRA
        absorbed = wash_replacement(part, m.disallowed, ol.held_days, ira=ira)
        d = ol.disposal
        d.adjustment += m.disallowed
        d.washed_quantity += m.quantity
        if ira:
            d.permanent += m.disallowed
        self.journal.append(
            Change(
                cause,
                "wash-permanent" if ira else "wash-adjust",
                lot.account,
                absorbed.lot_id,
                m.quantity,
                ZERO if ira else m.disallowed,
                f"loss of {d.account}/{d.sale_id} lot {d.lot_id}: {m.disallowed} disallowed",
            )
        )
        return absorbed, rest

    def _open_losses(self, household: str, symbol: str, on: date) -> list[_OpenLoss]:
        earliest = shift(on, -WASH_WINDOW_DAYS)
        found: list[_OpenLoss] = []
        for member in self.identity.members(symbol):
            losses = self._losses.get((household, member))
            if not losses:
                continue
            live = [ol for ol in losses if ol.quantity > 0 and ol.disposal.sold >= earliest]
            if live:
                self._losses[(household, member)] = live
            else:
                del self._losses[(household, member)]
            found.extend(live)
        found.sort(key=lambda ol: (ol.disposal.sold, ol.disposal.seq))
        return found

    # ----------------------------------------------------------------- sleeves
    def move(
        self,
        account: str,
        symbol: str,
        quantity: Decimal,
        *,
        from_sleeve: str,
        to_sleeve: str,
        lot_ids: Sequence[str] = (),
        cause: str = "sleeve move",
    ) -> list[Lot]:
        """Move shares between sleeves of one account (FIFO unless lots are named): no
        taxable event, lots keep basis and dates. Returns the moved lots."""
        acct = self._account_of(account)
        position = self._positions[acct.account_id].get(symbol, [])
        source = [lot for lot in position if lot.sleeve == from_sleeve]
        if not source:
            raise InsufficientQuantityError(
                f"no {symbol} in sleeve {from_sleeve!r} of account {account}", field="quantity"
            )
        moved, remaining = move_lots(
            source,
            quantity,
            to_sleeve,
            lot_ids=lot_ids,
            new_id=lambda lot: self._split_name(lot),
        )
        others = [lot for lot in position if lot.sleeve != from_sleeve]
        for lot in moved:
            self._names[account].add(lot.lot_id)
            self.journal.append(
                Change(
                    cause,
                    "move",
                    account,
                    lot.lot_id,
                    lot.quantity,
                    lot.cost_basis,
                    f"{from_sleeve}->{to_sleeve}",
                )
            )
        self._set_position(account, symbol, others + remaining + moved)
        return moved

    # ----------------------------------------------------------------- corporate actions
    def apply_action(self, action: CorporateAction) -> list[Disposal]:
        """Apply a corporate action (see :mod:`ballast_engine.tax.corporate`) to every
        account holding the security, once per action id (a repeat is a no-op returning
        the first application's disposals).

        Raises:
            CorporateActionError: naming the action: not a known action, invalid, or for a
                security no account holds. The ledger is then unchanged.
        """
        if not isinstance(action, CorporateAction):
            raise CorporateActionError(f"unknown corporate action {type(action).__name__}")
        action_id, symbol, on = action.action_id, action.symbol, action.on
        ref = f"action {action_id}"
        if action_id in self._actions:
            return self._actions[action_id]
        holders = [acct for acct in sorted(self._positions) if self._positions[acct].get(symbol)]
        if not holders:
            raise CorporateActionError(f"{symbol} is not held by any account", ref=ref)
        outcomes = []
        try:
            for acct in holders:
                outcomes.append((acct, apply_to_lots(action, self._positions[acct][symbol])))
        except TaxError as err:
            raise _with_ref(err, ref) from None
        cause = ref
        created: list[Disposal] = []
        for acct, outcome in outcomes:
            account = self.accounts[acct]
            self._set_position(acct, symbol, outcome.kept)
            for lot in outcome.new_lots:
                self._names[acct].add(lot.lot_id)
                self._positions[acct].setdefault(lot.symbol, []).append(lot)
                self.journal.append(
                    Change(
                        cause, "action", acct, lot.lot_id, lot.quantity, lot.cost_basis, lot.symbol
                    )
                )
            for lot in outcome.kept:
                self.journal.append(
                    Change(
                        cause, "action", acct, lot.lot_id, lot.quantity, lot.cost_basis, lot.symbol
                    )
                )
            created.extend(self._realize(account, outcome.reliefs, cause, wash=False))
            if outcome.income:
                self.income.append(Income(action_id, acct, symbol, on, outcome.income))
        if isinstance(action, SymbolChange):
            self.identity.rename(action.symbol, action.new_symbol)
        if isinstance(action, SymbolChange | StockMerger):
            # Loss sales still open for matching follow the security to its new symbol.
            for hh, sym in [k for k in self._losses if k[1] == symbol]:
                moved = self._losses.pop((hh, sym))
                self._losses.setdefault((hh, action.new_symbol), []).extend(moved)
        self._actions[action_id] = created
        return created

    # ----------------------------------------------------------------- adjustments
    def adjust(self, adj: Adjustment) -> list[Change]:
        """Apply an adjustment (see :mod:`ballast_engine.tax.adjustments`), all-or-nothing,
        in date order with trades. Returns its journal (empty: nothing to adjust).

        Raises:
            TaxInputError: unknown account, a field its kind needs missing or wrong, or a
                date before one already applied for the household.
        """
        try:
            acct = self._account_of(adj.account)
            validate(adj)
            last = self._last_day.get(acct.household)
            if last is not None and adj.on < last:
                raise TaxInputError(
                    f"adjustment dated {adj.on} arrives after a {last} input of household "
                    f"{acct.household}: replay the household in date order",
                    field="date",
                )
        except TaxError as err:
            raise _with_ref(err, adj.ref) from None
        self._last_day[acct.household] = adj.on
        cause = f"adjust {adj.adjustment_id}"
        position = self._positions[acct.account_id].get(adj.symbol, [])
        pieces = [lot for lot in position if is_piece(lot, adj.lot_id)]
        if adj.kind is AdjustmentKind.OPEN:
            if pieces:
                return []
            self._seq += 1
            lot = opened_lot(adj, self._seq)
            self._names[acct.account_id].add(lot.lot_id)
            self._set_position(acct.account_id, adj.symbol, [*position, lot])
            changes = changes_of(cause, [], {}, lot)
        else:
            after = adjust_pieces(pieces, adj) if pieces else {}
            kept = [after.get(lot.lot_id, lot) for lot in position]
            self._set_position(acct.account_id, adj.symbol, [x for x in kept if x is not None])
            changes = changes_of(cause, pieces, after, None)
        self.journal.extend(changes)
        return changes

    # ----------------------------------------------------------------- internals
    def _account_of(self, account: str) -> LedgerAccount:
        acct = self.accounts.get(account)
        if acct is None:
            raise TaxInputError(f"unknown account {account!r}", field="account")
        return acct

    def _set_position(self, account: str, symbol: str, lots: list[Lot]) -> None:
        if lots:
            self._positions[account][symbol] = lots
        else:
            self._positions[account].pop(symbol, None)

    def _replace_lot(self, old: Lot, new: list[Lot]) -> None:
        lots = self._positions[old.account][old.symbol]
        for i, lot in enumerate(lots):
            if lot.lot_id == old.lot_id:
                lots[i : i + 1] = new
                return
        raise AssertionError(f"lot {old.lot_id} vanished")  # pragma: no cover

    def _household_symbol_lots(self, household: str, symbols: Sequence[str]) -> list[Lot]:
        out: list[Lot] = []
        for acct in self._households.get(household, ()):
            positions = self._positions[acct]
            for sym in symbols:
                out.extend(positions.get(sym, ()))
        return out

    def _split_name(self, lot: Lot) -> str:
        base = lot.lot_id
        key = (lot.account, base)
        n = self._split_count.get(key, 0)
        names = self._names[lot.account]
        while True:
            n += 1
            name = f"{base}/{n}"
            if name not in names:
                break
        self._split_count[key] = n
        return name


def replay(
    trades: Iterable[Fill | Adjustment],
    accounts: Iterable[LedgerAccount],
    *,
    identity: Identity | None = None,
    method: ReliefMethod | None = None,
) -> TaxLedger:
    """Apply ``trades`` in the canonical order (date, then arrival within the day).

    Args:
        trades: fills and adjustments of any households, in any order of days.
        accounts: the accounts they belong to.
        identity: substantially identical securities.
        method: overrides every account's default relief method.

    Returns:
        the ledger after the last trade (raises on the first bad trade, naming it).
    """
    accts = [replace(a, method=method) if method is not None else a for a in accounts]
    ledger = TaxLedger(accts, identity=identity)
    ordered = sorted(enumerate(trades), key=lambda it: (it[1].on, it[0]))
    for _, trade in ordered:
        if isinstance(trade, Adjustment):
            ledger.adjust(trade)
        else:
            ledger.apply(trade)
    return ledger
