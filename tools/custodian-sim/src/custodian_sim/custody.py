"""The custodial book's rules: what the simulated custodian holds for each account (cash and
tax lots), seeded from a book file set, changed by the allocations the gateway sends after
each block's fills are shared, and written out as the day's files.

- A buy opens lot `fill-<fill_id>` (the id taxlot-svc gives the lot of that fill, so the
  lot ids agree) at basis `quantity x price` in cents, acquired on the trade date (the UTC
  date of `executed_at`), and spends that cash.
- A sell relieves exactly the lots it names, in their order (versus purchase), and only
  when it names none the oldest first (FIFO: acquisition date, then opening order). A name
  `<lot>/<piece>` the custodian does not hold is a piece the ledger split off its lot `<lot>`
  (a sleeve transfer, a wash sale): the custodian holds the lot whole and relieves it. Each
  lot gives up its basis pro rata in cents (all of what is left when the lot closes); the
  proceeds `quantity x price` in cents are shared across the lots the same way.
- An allocation that cannot be booked (unknown account, a named lot the account does not
  hold or of another security, more shares than the lots hold) is refused with the reason;
  the rest of the batch is booked. Reconciliation will find the break.
- Every allocation is kept by fill id: sending it again gives the first answer and changes
  nothing (idempotent); the same fill id with other terms is refused.
- Wash sales, as a custodian tracks them (one account, one security): a taxable account's
  sale of a lot at a loss is matched to shares of the same symbol in the account bought
  within 30 days before (still held, not of the lot sold, not a replacement already) or,
  for the loss shares left, after; each matched share's part of the loss is added to the
  replacement lot's basis. The window, the matching and the adjustment are the tax
  engine's (`ballast_engine.tax.wash`), applied in booking order as taxlot-svc's ledger
  applies fills, so a clean day reconciles with no basis break. An IRA's losses do not wash.

The amounts are rounded as the tax engine rounds them (cents, half to even), so a ledger
that books the same fills the same way agrees to the cent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Literal

from ballast_common.contracts.custodian_files import CASH, LOTS, POSITIONS, PRICES, TRANSACTIONS
from ballast_common.custodian_files import FileSetWriter
from ballast_engine.tax import Lot, allocate_loss
from ballast_engine.tax.model import WASH_WINDOW_DAYS, shift
from ballast_engine.tax.wash import replacement_candidates, wash_replacement

from custodian_sim.book_files import FileProblem, digest_of, stage_book
from custodian_sim.store import (
    BookLoad,
    BookStore,
    HeldLot,
    NewLot,
    OpenLoss,
    Relief,
    StoredAllocation,
    WashAdjustment,
)

CENT = Decimal("0.01")
PRICE_QUANTUM = Decimal("0.000001")  # prices.csv and transactions.csv keep 6 places
LOT_PREFIX = "fill-"
Outcome = Literal["booked", "refused"]


class NoBook(Exception):
    """No book file set was loaded into this simulator."""


class OtherBookLoaded(Exception):
    """A different book file set is loaded already."""

    def __init__(self, loaded: BookLoad) -> None:
        self.loaded = loaded
        super().__init__(
            f"book {loaded.load_id} (from {loaded.folder}) is loaded already; POST /reset "
            "first to load another"
        )


class BookFilesInvalid(Exception):
    """The book file set has problems: nothing was loaded."""

    def __init__(self, problems: list[FileProblem], count: int) -> None:
        self.problems = problems
        self.count = count
        super().__init__(f"{count} problem(s) in the book files, the first: {problems[0]}")


class BookRequestInvalid(Exception):
    """POST /book named no readable folder, or no date for the book."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class DayBeforeBook(Exception):
    """Files were asked for a day before the book's as-of date (the book does not know it)."""


def money(value: Decimal) -> Decimal:
    """An amount rounded to cents, half to even (as the tax engine rounds)."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def prorate(total: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """The share of `total` that `part` of `whole` carries, in cents; all of it when the
    part is the whole (so the pieces add up to the total)."""
    return total if part == whole else money(total * part / whole)


def lot_id_of(fill_id: str) -> str:
    """The id of the lot a buy's fill opens (taxlot-svc's name for it)."""
    return f"{LOT_PREFIX}{fill_id}"


def whole_lot_of(name: str) -> str:
    """The lot a piece `<lot>/<piece>` of the ledger's was split off (a lot's own id as is)."""
    return name.split("/", 1)[0]


def settle_date(trade_date: date) -> date:
    """T+1: the next weekday (holidays aside)."""
    day = trade_date + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


@dataclass(frozen=True)
class AllocationRequest:
    """One account's share of a block's fills, as the gateway sends it."""

    fill_id: str
    client_order_id: str
    account_id: str
    symbol: str
    side: Literal["buy", "sell"]
    quantity: Decimal
    price: Decimal
    executed_at: datetime
    lot_ids: tuple[str, ...] = ()

    @property
    def trade_date(self) -> date:
        return self.executed_at.astimezone(UTC).date()


@dataclass(frozen=True)
class AllocationResult:
    fill_id: str
    outcome: Outcome
    reason: str | None
    duplicate: bool  # received before (its first answer is repeated)


@dataclass(frozen=True)
class DayFiles:
    folder: Path
    business_date: date
    rows: dict[str, int]


@dataclass
class _Lot:
    """A lot while a batch is booked: what is left of it."""

    seq: int
    lot_id: str
    symbol: str
    acquired_on: date
    quantity: Decimal
    basis: Decimal
    absorbed: Decimal = Decimal(0)  # its shares that absorbed a wash-sale loss

    def as_replacement(self, account_id: str) -> Lot:
        """The tax engine's lot of its shares that may still absorb a loss."""
        return Lot(
            lot_id=self.lot_id,
            account=account_id,
            symbol=self.symbol,
            quantity=max(self.quantity - self.absorbed, Decimal(0)),
            cost_basis=self.basis,
            acquired=self.acquired_on,
            holding_start=self.acquired_on,
            purchase_id=self.lot_id,
            seq=self.seq,
        )


class _Booking:
    """The state one batch of allocations is booked against, and what it produced."""

    def __init__(
        self,
        book: BookLoad | None,
        accounts: dict[str, str],
        held: list[HeldLot],
        next_seq: int,
        losses: list[OpenLoss],
    ) -> None:
        self.book = book
        self.accounts = accounts  # account -> type (taxable, ira)
        self.lots: dict[tuple[str, str], _Lot] = {}  # (account, lot id) -> lot
        self.positions: dict[tuple[str, str], list[_Lot]] = {}  # (account, symbol) -> lots
        for h in held:
            lot = _Lot(h.seq, h.lot_id, h.symbol, h.acquired_on, h.quantity, h.basis, h.absorbed)
            self._add(h.account_id, lot)
        self.next_seq = next_seq
        self.new_lots: list[NewLot] = []
        self.reliefs: list[Relief] = []
        self.washes: list[WashAdjustment] = []
        self.wash_positions: dict[str, int] = {}  # fill id -> adjustments it made so far
        self.losses: dict[tuple[str, str], list[OpenLoss]] = {}  # (account, symbol) -> open
        for loss in losses:
            self.losses.setdefault((loss.account_id, loss.symbol), []).append(loss)
        self.changed_losses: dict[tuple[str, int], OpenLoss] = {}

    def _add(self, account_id: str, lot: _Lot) -> None:
        self.lots[(account_id, lot.lot_id)] = lot
        self.positions.setdefault((account_id, lot.symbol), []).append(lot)

    def book_one(self, r: AllocationRequest) -> tuple[str | None, Decimal]:
        """Book one allocation: (None, cash moved) or (the reason it is refused, 0)."""
        if self.book is None:
            return "no book is loaded at this custodian (POST /book)", Decimal(0)
        if r.account_id not in self.accounts:
            return f"account {r.account_id} is not held at this custodian", Decimal(0)
        if r.trade_date < self.book.as_of:
            return (
                f"executed on {r.trade_date}, before the book's date {self.book.as_of}",
                Decimal(0),
            )
        if r.side == "buy":
            return self._buy(r)
        return self._sell(r)

    def _buy(self, r: AllocationRequest) -> tuple[str | None, Decimal]:
        lot_id = lot_id_of(r.fill_id)
        if (r.account_id, lot_id) in self.lots:
            return f"account {r.account_id} already has a lot {lot_id}", Decimal(0)
        basis = money(r.quantity * r.price)
        self.next_seq += 1
        lot = _Lot(self.next_seq, lot_id, r.symbol, r.trade_date, r.quantity, basis)
        self._add(r.account_id, lot)
        self.new_lots.append(
            NewLot(r.account_id, lot_id, r.symbol, r.quantity, basis, r.trade_date, r.fill_id)
        )
        earliest = shift(r.trade_date, -WASH_WINDOW_DAYS)
        for loss in self.losses.get((r.account_id, r.symbol), ()):
            if loss.quantity > 0 and loss.sold_on >= earliest:
                self._absorb(r, loss, lot)
        return None, -basis

    def _sell(self, r: AllocationRequest) -> tuple[str | None, Decimal]:
        if r.lot_ids:
            ordered: list[_Lot] = []
            for name in r.lot_ids:
                lot = self.lots.get((r.account_id, name)) or self.lots.get(
                    (r.account_id, whole_lot_of(name))
                )
                if lot is None:
                    return f"lot {name} is not a lot of account {r.account_id}", Decimal(0)
                if lot.symbol != r.symbol:
                    return f"lot {name} is a lot of {lot.symbol}, not of {r.symbol}", Decimal(0)
                if lot.quantity <= 0:
                    return f"lot {name} of account {r.account_id} is closed", Decimal(0)
                if lot not in ordered:
                    ordered.append(lot)
            what = "the named lots hold"
        else:
            ordered = sorted(
                (
                    lot
                    for lot in self.positions.get((r.account_id, r.symbol), ())
                    if lot.quantity > 0
                ),
                key=lambda lot: (lot.acquired_on, lot.seq, lot.lot_id),
            )
            what = f"account {r.account_id} holds"
        available = sum((lot.quantity for lot in ordered), Decimal(0))
        if available < r.quantity:
            return (
                f"cannot relieve {_plain(r.quantity)} {r.symbol}: {what} {_plain(available)}",
                Decimal(0),
            )
        proceeds = money(r.quantity * r.price)
        proceeds_left, quantity_left = proceeds, r.quantity
        relieved: list[tuple[Relief, _Lot]] = []
        for position, lot in enumerate(ordered):
            if quantity_left <= 0:
                break
            take = min(lot.quantity, quantity_left)
            share = prorate(proceeds_left, take, quantity_left)
            basis = prorate(lot.basis, take, lot.quantity)
            proceeds_left -= share
            quantity_left -= take
            # the shares that absorbed a loss go last (the ledger keeps them as a piece)
            lot.absorbed = min(lot.absorbed, lot.quantity - take)
            lot.quantity -= take
            lot.basis -= basis
            relief = Relief(
                r.fill_id, position, r.account_id, lot.lot_id, take, basis, share, r.trade_date
            )
            self.reliefs.append(relief)
            relieved.append((relief, lot))
        if self.accounts.get(r.account_id) != "ira":
            # after the whole sale, as the ledger: the lots it left are candidates too
            for relief, lot in relieved:
                if relief.proceeds < relief.basis:
                    self._wash(r, relief, lot)
        return None, proceeds

    def _wash(self, r: AllocationRequest, relief: Relief, sold: _Lot) -> None:
        """Match a relief's loss to replacement shares bought within the window before; keep
        what is not matched for buys to come."""
        loss = OpenLoss(
            fill_id=r.fill_id,
            position=relief.position,
            account_id=r.account_id,
            symbol=r.symbol,
            lot_id=sold.lot_id,
            sold_on=r.trade_date,
            held_days=(r.trade_date - sold.acquired_on).days,
            quantity=relief.quantity,
            loss=relief.basis - relief.proceeds,
        )
        held = self.positions.get((r.account_id, r.symbol), [])
        by_id = {lot.lot_id: lot for lot in held}
        candidates = replacement_candidates(
            [lot.as_replacement(r.account_id) for lot in held if lot.quantity > lot.absorbed],
            [r.symbol],
            sold=r.trade_date,
            exclude_purchase=sold.lot_id,
        )
        for candidate in candidates:
            if loss.quantity <= 0:
                break
            self._absorb(r, loss, by_id[candidate.lot_id])
        if loss.quantity > 0:
            self.losses.setdefault((r.account_id, r.symbol), []).append(loss)
            self.changed_losses[(loss.fill_id, loss.position)] = loss

    def _absorb(self, r: AllocationRequest, loss: OpenLoss, lot: _Lot) -> None:
        """Match what is left of `loss` to `lot`'s shares that may still absorb one."""
        matches, loss.quantity, loss.loss = allocate_loss(
            loss.quantity, loss.loss, [(lot.lot_id, lot.quantity - lot.absorbed)]
        )
        self.changed_losses[(loss.fill_id, loss.position)] = loss
        for match in matches:
            replaced = wash_replacement(
                lot.as_replacement(r.account_id), match.disallowed, loss.held_days, ira=False
            )
            lot.basis = replaced.cost_basis
            lot.absorbed += match.quantity
            position = self.wash_positions.get(r.fill_id, 0)
            self.wash_positions[r.fill_id] = position + 1
            self.washes.append(
                WashAdjustment(
                    r.fill_id,
                    position,
                    r.account_id,
                    lot.lot_id,
                    match.quantity,
                    match.disallowed,
                    r.trade_date,
                )
            )


class Custody:
    """The custodial book of one simulator, kept in its store."""

    def __init__(self, store: BookStore) -> None:
        self.store = store

    # -- seeding ------------------------------------------------------------------------------

    def load_book(self, folder: Path, as_of: date | None, now: datetime) -> tuple[BookLoad, bool]:
        """Load a book file set whole, or nothing (BookFilesInvalid naming the bad rows);
        its date is `as_of`, else the folder's name. Returns the load and whether it was
        loaded before (the same files: nothing done)."""
        if not folder.is_dir():
            raise BookRequestInvalid("folder", f"{folder} is not a folder the custodian can read")
        if as_of is None:
            try:
                as_of = date.fromisoformat(folder.name)
            except ValueError:
                raise BookRequestInvalid(
                    "as_of", f"not given, and the folder's name {folder.name!r} is not a date"
                ) from None
        load_id = f"{as_of.isoformat()}-{digest_of(folder)[:16]}"
        loaded = self.store.loaded_book()
        if loaded is not None:
            if loaded.load_id == load_id:
                return loaded, True
            raise OtherBookLoaded(loaded)
        with self.store.transaction():
            problems = stage_book(self.store, folder, as_of)
            if problems.count:
                raise BookFilesInvalid(problems.kept, problems.count)
            load = self.store.apply_staged(load_id, str(folder), as_of, now)
        return load, False

    # -- allocations --------------------------------------------------------------------------

    def book(self, requests: Sequence[AllocationRequest], now: datetime) -> list[AllocationResult]:
        """Book a batch of allocations in one transaction, in their order; each is booked
        or refused on its own, and one received before gets its first answer."""
        store = self.store
        results: list[AllocationResult] = []
        with store.transaction():
            known = store.allocations_by_fill([r.fill_id for r in requests])
            sells = [r for r in requests if r.side == "sell"]
            earliest = min(r.trade_date for r in requests) - timedelta(days=WASH_WINDOW_DAYS)
            booking = _Booking(
                store.loaded_book(),
                store.known_accounts([r.account_id for r in requests]),
                store.lots_for_booking(
                    [(r.account_id, r.symbol) for r in sells],
                    [(r.account_id, name) for r in sells for name in r.lot_ids]
                    + [(r.account_id, whole_lot_of(name)) for r in sells for name in r.lot_ids]
                    + [(r.account_id, lot_id_of(r.fill_id)) for r in requests if r.side == "buy"],
                ),
                store.last_lot_seq(),
                store.open_losses(
                    [(r.account_id, r.symbol) for r in requests if r.side == "buy"], earliest
                ),
            )
            stored: list[StoredAllocation] = []
            again: list[str] = []
            for r in requests:
                outcome: Outcome
                prior = known.get(r.fill_id)
                if prior is not None:
                    differences = _differences(prior, r)
                    if differences:
                        conflict = (
                            f"fill_id {r.fill_id} was received before with other terms "
                            f"(differs in: {', '.join(differences)})"
                        )
                        results.append(AllocationResult(r.fill_id, "refused", conflict, True))
                    else:
                        again.append(r.fill_id)
                        first: Outcome = "booked" if prior.outcome == "booked" else "refused"
                        results.append(AllocationResult(r.fill_id, first, prior.reason, True))
                    continue
                reason, cash = booking.book_one(r)
                outcome = "refused" if reason else "booked"
                allocation = StoredAllocation(
                    fill_id=r.fill_id,
                    client_order_id=r.client_order_id,
                    account_id=r.account_id,
                    symbol=r.symbol,
                    side=r.side,
                    quantity=r.quantity,
                    price=r.price,
                    executed_at=r.executed_at,
                    lot_ids=r.lot_ids,
                    outcome=outcome,
                    reason=reason,
                    cash=cash,
                )
                known[r.fill_id] = allocation
                stored.append(allocation)
                results.append(AllocationResult(r.fill_id, outcome, reason, False))
            store.insert_bookings(
                stored,
                booking.new_lots,
                booking.reliefs,
                now,
                booking.washes,
                list(booking.changed_losses.values()),
            )
            store.count_allocations_received_again(again)
        return results

    # -- the daily files ----------------------------------------------------------------------

    def write_day(self, folder: Path, business_date: date) -> DayFiles:
        """Write the day's file set (manifest, prices, cash, positions, lots, transactions of
        the day) from the book as it stood at the close of `business_date`, in `folder`."""
        book = self.store.loaded_book()
        if book is None:
            raise NoBook("no book is loaded at this custodian (POST /book)")
        if business_date < book.as_of:
            raise DayBeforeBook(
                f"{business_date} is before the book's date {book.as_of}: the custodian does "
                "not know that day"
            )
        day = business_date.isoformat()
        writer = FileSetWriter(folder, business_date)
        prices = writer.file(PRICES.name)
        for symbol, price in self.store.closes_as_of(business_date):
            close = price.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)
            prices.write({"symbol": symbol, "price": _plain(close), "as_of": day})
        cash = writer.file(CASH.name)
        for account, amount in self.store.cash_as_of(business_date):
            cash.write({"account_id": account, "amount": format(amount, "f"), "as_of": day})
        self._positions_and_lots(writer, business_date)
        self._transactions(writer, business_date)
        return DayFiles(folder, business_date, writer.finish())

    def _positions_and_lots(self, writer: FileSetWriter, business_date: date) -> None:
        """Lots come by account, symbol and opening order: a position is written when the
        next one starts."""
        day = business_date.isoformat()
        positions, lots = writer.file(POSITIONS.name), writer.file(LOTS.name)
        current: tuple[str, str] | None = None
        held = Decimal(0)

        def flush() -> None:
            if current is not None:
                positions.write(
                    {
                        "account_id": current[0],
                        "symbol": current[1],
                        "quantity": _plain(held),
                        "as_of": day,
                    }
                )

        for lot in self.store.lots_as_of(business_date):
            key = (lot.account_id, lot.symbol)
            if key != current:
                flush()
                current, held = key, Decimal(0)
            held += lot.quantity
            lots.write(
                {
                    "account_id": lot.account_id,
                    "symbol": lot.symbol,
                    "lot_id": lot.lot_id,
                    "quantity": _plain(lot.quantity),
                    "acquired_on": lot.acquired_on.isoformat(),
                    "cost_basis": _plain(lot.basis),
                    "as_of": day,
                }
            )
        flush()

    def _transactions(self, writer: FileSetWriter, business_date: date) -> None:
        out = writer.file(TRANSACTIONS.name)
        day = business_date.isoformat()
        settles = settle_date(business_date).isoformat()
        for t in self.store.transactions_on(business_date):
            price = t.price.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)
            out.write(
                {
                    "transaction_id": t.fill_id,
                    "account_id": t.account_id,
                    "type": t.side,
                    "symbol": t.symbol,
                    "quantity": _plain(t.quantity),
                    "amount": format(t.amount, "f"),
                    "price": _plain(price),
                    "trade_date": day,
                    "settle_date": settles,
                    "lot_id": t.relieved_lot or lot_id_of(t.fill_id),
                    "description": f"allocation of block order {t.client_order_id}"[:200],
                }
            )


def _plain(value: Decimal) -> str:
    """A decimal without an exponent or trailing zeros (10.50 -> 10.5, 1E+2 -> 100)."""
    return format(value.normalize(), "f")


def _differences(prior: StoredAllocation, r: AllocationRequest) -> list[str]:
    theirs = replace(r, executed_at=r.executed_at.astimezone(UTC), lot_ids=tuple(r.lot_ids))
    return [
        name
        for name in (
            "client_order_id",
            "account_id",
            "symbol",
            "side",
            "quantity",
            "price",
            "executed_at",
            "lot_ids",
        )
        if getattr(prior, name) != getattr(theirs, name)
    ]
