"""Households and their replays: who belongs to which household, replaying a household's
inputs with the tax engine, and rewriting the derived lots and realized gains.

Every caller takes the household locks (:func:`repository.lock_households`) first, in the
same transaction, so two events of one household never replay concurrently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from ballast_common.contracts.events import HoldingsReconciledV1, PositionV1
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import repository as repo
from taxlot_svc.book import (
    FILL,
    AccountFacts,
    ActionInput,
    Input,
    Replay,
    build_action,
    gain_rows,
    lot_rows,
    replay_household,
    singleton_household,
    symbol_family,
)

Positions = list[tuple[str, Decimal, Decimal]]
LotState = tuple[str, Decimal, Decimal]  # symbol, quantity, basis
ZERO = Decimal(0)


async def facts_of(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, AccountFacts]:
    """Household and type of each account (a household of its own, taxable, until
    account-svc says otherwise)."""
    known = {
        row.account_id: AccountFacts(row.account_id, row.household_id, row.account_type)
        for row in await repo.account_infos(session, account_ids)
    }
    return {a: known.get(a) or AccountFacts(a, singleton_household(a)) for a in account_ids}


async def members_of(
    session: AsyncSession, households: Iterable[str]
) -> dict[str, list[AccountFacts]]:
    wanted = sorted(set(households))
    out: dict[str, list[AccountFacts]] = {h: [] for h in wanted}
    for row in await repo.household_members(session, wanted):
        out[row.household_id].append(
            AccountFacts(row.account_id, row.household_id, row.account_type)
        )
    lonely = [h.removeprefix("account:") for h in wanted if h.startswith("account:")]
    if lonely:
        placed = {row.account_id for row in await repo.account_infos(session, lonely)}
        for account in lonely:
            if account not in placed:  # once account-svc names its household, it moves there
                out[singleton_household(account)].append(
                    AccountFacts(account, singleton_household(account))
                )
    return out


@dataclass(slots=True)
class Replays:
    """Replays of some households, with each account's positions before and after."""

    replays: dict[str, Replay]
    members: dict[str, list[AccountFacts]]
    family: set[str] | None = None  # the securities replayed (None: all)
    inputs: dict[str, list[Input]] = field(default_factory=dict)
    before: dict[str, Positions] = field(default_factory=dict)
    after: dict[str, Positions] = field(default_factory=dict)
    lots_before: dict[tuple[str, str], LotState] = field(default_factory=dict)
    lots_after: dict[tuple[str, str], LotState] = field(default_factory=dict)

    @property
    def accounts(self) -> list[str]:
        return sorted(f.account_id for fs in self.members.values() for f in fs)

    def changed(self) -> list[str]:
        """Accounts whose positions (quantity or basis) the replay changed."""
        return [a for a in self.accounts if self.before.get(a) != self.after.get(a)]

    def restatements(
        self, cause: str, ref: str | None, *, exclude: Iterable[str] = ()
    ) -> list[dict[str, object]]:
        """Ledger entries (kind ``restate``) of every lot the replay changed in accounts
        other than ``exclude``: the change in quantity and in basis."""
        skip = set(exclude)
        entries: list[dict[str, object]] = []
        for key in sorted(set(self.lots_before) | set(self.lots_after)):
            account, lot_id = key
            if account in skip:
                continue
            old = self.lots_before.get(key)
            new = self.lots_after.get(key)
            if old == new:
                continue
            symbol = (new or old or ("", ZERO, ZERO))[0]
            entries.append(
                {
                    "account_id": account,
                    "cause": cause,
                    "fill_id": ref,
                    "kind": "restate",
                    "symbol": symbol,
                    "lot_id": lot_id,
                    "quantity": (new[1] if new else ZERO) - (old[1] if old else ZERO),
                    "amount": (new[2] if new else ZERO) - (old[2] if old else ZERO),
                }
            )
        return entries


def _input(row: Any) -> Input:
    lot_ids = tuple(x for x in row.lot_ids.split(";") if x)
    return Input(
        seq=row.id or 0,
        account_id=row.account_id,
        kind=row.kind,
        ref=row.ref,
        on=row.trade_on,
        symbol=row.symbol,
        side=row.side,
        quantity=row.quantity,
        price=row.price,
        fees=row.fees,
        lot_name=row.lot_name,
        lot_ids=lot_ids,
        method=row.method,
    )


async def replay(
    session: AsyncSession, households: Iterable[str], symbols: Iterable[str] | None = None
) -> Replays:
    """Replay households in memory (no writes); only the family of ``symbols`` when given
    (see :func:`taxlot_svc.book.symbol_family`). Raises the engine's ``TaxError``."""
    members = await members_of(session, households)
    accounts = sorted(f.account_id for fs in members.values() for f in fs)
    actions = [
        ActionInput(r.action_id, r.effective_on, build_action(r.terms))
        for r in await repo.corporate_actions(session)
    ]
    family: set[str] | None = None
    if symbols is not None:
        family = symbol_family(symbols, actions)
        actions = [a for a in actions if a.action.symbol in family]
    wanted = sorted(family) if family is not None else None
    rows = [_input(r) for r in await repo.tax_inputs(session, accounts, wanted)]
    out = Replays({}, members, family)
    for household, facts in members.items():
        mine = {f.account_id for f in facts}
        inputs = [i for i in rows if i.account_id in mine]
        out.inputs[household] = inputs
        out.replays[household] = replay_household(facts, inputs, actions)
    return out


async def rebuild(
    session: AsyncSession, households: Iterable[str], symbols: Iterable[str] | None = None
) -> Replays:
    """Replay households (only the family of ``symbols`` when given) and bring their
    accounts' stored lots and realized gains in line with the replay (only the rows that
    differ are written)."""
    result = await replay(session, households, symbols)
    accounts = result.accounts
    family = sorted(result.family) if result.family is not None else None
    old_lots, old_gains = await repo.derived_rows(session, accounts, family)
    origins: dict[str, tuple[str, str | None]] = {}
    fill_ids: dict[str, str] = {}
    for inputs in result.inputs.values():
        for i in inputs:
            if i.kind == FILL:
                origins[i.trade_id] = ("fill", i.ref)
                fill_ids[i.trade_id] = i.ref
            else:
                origins[i.trade_id] = ("opening-balance", None)
    lots: list[dict[str, Any]] = []
    gains: list[dict[str, Any]] = []
    for r in result.replays.values():
        lots += lot_rows(r.ledger.lots(), origins)
        gains += gain_rows(r.ledger.disposals, fill_ids)
    # Lots: keyed by (account, lot id); a lot that differs in any column is rewritten.
    old_by_key = {(row[0], row[1]): row for row in old_lots}
    new_by_key = {(r["account_id"], r["lot_id"]): r for r in lots}
    new_tuples = {k: tuple(r[c] for c in repo.LOT_COLUMNS) for k, r in new_by_key.items()}
    stale = [k for k, row in old_by_key.items() if new_tuples.get(k) != row]
    fresh = [r for k, r in new_by_key.items() if old_by_key.get(k) != new_tuples[k]]
    # Gains: a multiset of rows; equal rows are kept, the others replaced.
    wanted = Counter(tuple(r[c] for c in repo.GAIN_COLUMNS) for r in gains)
    gone: list[int] = []
    for gain_id, row in old_gains:
        if wanted[row] > 0:
            wanted[row] -= 1
        else:
            gone.append(gain_id)
    added = [r for r in gains if _take(wanted, tuple(r[c] for c in repo.GAIN_COLUMNS))]
    await repo.write_derived(
        session, delete_lots=stale, add_lot_rows=fresh, delete_gains=gone, add_gain_rows=added
    )
    result.lots_before = {(row[0], row[1]): (row[3], row[4], row[5]) for row in old_lots}
    result.lots_after = {
        k: (r["symbol"], r["quantity"], r["cost_basis"]) for k, r in new_by_key.items()
    }
    result.before = _positions(accounts, result.lots_before)
    result.after = _positions(accounts, result.lots_after)
    return result


def _take(counter: Counter[tuple[Any, ...]], key: tuple[Any, ...]) -> bool:
    if counter[key] > 0:
        counter[key] -= 1
        return True
    return False


def _positions(
    accounts: Sequence[str], lots: dict[tuple[str, str], LotState]
) -> dict[str, Positions]:
    """(symbol, quantity, basis) per account, by symbol: the sums of the lots."""
    sums: dict[str, dict[str, tuple[Decimal, Decimal]]] = {a: {} for a in accounts}
    for (account, _lot), (symbol, quantity, basis) in lots.items():
        q, b = sums.setdefault(account, {}).get(symbol, (ZERO, ZERO))
        sums[account][symbol] = (q + quantity, b + basis)
    return {a: [(s, q, b) for s, (q, b) in sorted(by.items())] for a, by in sums.items()}


async def publish_restated(
    uow: UnitOfWork,
    replayed: Replays,
    *,
    exclude: set[str],
    cause: Literal["opening-balance", "fills"],
    fill_ids: Sequence[str] = (),
) -> list[str]:
    """Publish the holdings of accounts (with a ledger) whose positions a replay changed."""
    changed = [a for a in replayed.changed() if a not in exclude]
    # Read, not locked: the caller holds the household lock, which every change of these
    # books takes too (taking their row locks here could deadlock with a fill of theirs).
    for row in await repo.books(uow.session, changed, for_update=False):
        uow.publish(
            HoldingsReconciledV1(
                account_id=row.account_id,
                as_of=row.as_of,
                cash=row.cash,
                positions=await positions_after(uow.session, replayed, row.account_id),
                cause=cause,
                fill_ids=list(fill_ids),
            ),
            key=row.account_id,
            tenant=row.tenant,
        )
    return changed


async def positions_after(
    session: AsyncSession, replayed: Replays, account: str
) -> list[PositionV1]:
    """An account's whole positions after a replay (read back when the replay covered only
    some securities)."""
    if replayed.family is None:
        return positions_v1(replayed.after.get(account, []))
    return positions_v1(await repo.positions(session, account))


def positions_v1(rows: Sequence[tuple[str, Decimal, Decimal]]) -> list[PositionV1]:
    return [PositionV1(symbol=s, quantity=q, cost_basis=b) for s, q, b in rows]
