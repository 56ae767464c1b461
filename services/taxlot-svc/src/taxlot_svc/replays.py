"""Households and their replays: who belongs to which household, replaying a household's
inputs with the tax engine, and rewriting the derived lots and realized gains. The inputs
include the custodian's figures accepted (kind ``adjust``), so a replay keeps them.

A replay is needed when a fill arrives late (dated before what its household already
applied), when an account changes household or type, and for corporate actions and
opening balances of households with history. A fill in date order takes the incremental
path instead (:mod:`taxlot_svc.incremental`).

Callers hold the write lock (and, in consumers, the households' locks) in the same
transaction, so two events of one household never change it concurrently.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from ballast_common.uow import Cause
from ballast_engine.tax import Identity
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import repository as repo
from taxlot_svc.book import (
    ADJUST,
    FILL,
    MOVE,
    RECONCILIATION,
    AccountFacts,
    ActionInput,
    Input,
    Replay,
    build_action,
    gain_rows,
    identity_of,
    lot_rows,
    replay_household,
    singleton_household,
    symbol_family,
)

LotState = tuple[Any, ...]
ZERO = Decimal(0)


async def facts_of(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, AccountFacts]:
    """Household and type of each account (a household of its own, taxable, until
    account-svc says otherwise)."""
    known = {
        row["account_id"]: AccountFacts(row["account_id"], row["household_id"], row["account_type"])
        for row in await repo.account_infos(session, account_ids)
    }
    return {a: known.get(a) or AccountFacts(a, singleton_household(a)) for a in account_ids}


async def members_of(
    session: AsyncSession, households: Iterable[str]
) -> dict[str, list[AccountFacts]]:
    wanted = sorted(set(households))
    out: dict[str, list[AccountFacts]] = {h: [] for h in wanted}
    for row in await repo.household_members(session, wanted):
        out[row["household_id"]].append(
            AccountFacts(row["account_id"], row["household_id"], row["account_type"])
        )
    lonely = [h.removeprefix("account:") for h in wanted if h.startswith("account:")]
    if lonely:
        placed = {row["account_id"] for row in await repo.account_infos(session, lonely)}
        for account in lonely:
            if account not in placed:  # once account-svc names its household, it moves there
                out[singleton_household(account)].append(
                    AccountFacts(account, singleton_household(account))
                )
    return out


@dataclass(slots=True)
class Replays:
    """Replays of some households, with each account's lots before and after."""

    replays: dict[str, Replay]
    members: dict[str, list[AccountFacts]]
    family: set[str] | None = None  # the securities replayed (None: all)
    inputs: dict[str, list[Input]] = field(default_factory=dict)
    lots_before: dict[tuple[str, str], LotState] = field(default_factory=dict)
    lots_after: dict[tuple[str, str], LotState] = field(default_factory=dict)
    lot_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accounts(self) -> list[str]:
        return sorted(f.account_id for fs in self.members.values() for f in fs)

    def changed(self) -> list[str]:
        """Accounts whose lots (any field) the replay changed."""
        keys = set(self.lots_before) | set(self.lots_after)
        return sorted(
            {
                a
                for a, lot in keys
                if self.lots_before.get((a, lot)) != self.lots_after.get((a, lot))
            }
        )

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
                    "sleeve": "",
                }
            )
        return entries

    def last_day(self, household: str) -> date | None:
        return self.replays[household].last_day


def input_of(row: Any) -> Input:
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
        sleeve=row.sleeve,
        to_sleeve=row.to_sleeve,
        acquired_on=row.acquired_on,
    )


async def actions_of(session: AsyncSession) -> list[ActionInput]:
    return [
        ActionInput(r.action_id, r.effective_on, build_action(r.terms))
        for r in await repo.corporate_actions(session)
    ]


async def current_identity(session: AsyncSession) -> Identity:
    """The substantially identical securities in force now: the members of the equivalence
    sets marked identical (see :func:`taxlot_svc.book.identity_of`)."""
    return identity_of(await repo.identical_sets(session))


async def replay(
    session: AsyncSession,
    households: Iterable[str],
    symbols: Iterable[str] | None = None,
    *,
    members: dict[str, list[AccountFacts]] | None = None,
    known_inputs: dict[str, list[Input]] | None = None,
) -> Replays:
    """Replay households in memory (no writes); only the family of ``symbols`` when given
    (see :func:`taxlot_svc.book.symbol_family`). ``known_inputs`` gives the whole input of
    households known to have nothing stored (fresh ones), saving the reads. Securities are
    substantially identical by the identical equivalence sets in force now, for the whole
    history replayed. Raises the engine's ``TaxError``."""
    if members is None:
        members = await members_of(session, households)
    actions = await actions_of(session)
    identity = await current_identity(session)
    family: set[str] | None = None
    if symbols is not None:
        family = symbol_family(symbols, actions, identity)
        actions = [a for a in actions if a.action.symbol in family]
    known_inputs = known_inputs or {}
    to_read = sorted(f.account_id for h, fs in members.items() if h not in known_inputs for f in fs)
    wanted = sorted(family) if family is not None else None
    rows = [input_of(r) for r in await repo.tax_inputs(session, to_read, wanted)]
    out = Replays({}, members, family)
    for household, facts in members.items():
        mine = {f.account_id for f in facts}
        if household in known_inputs:
            inputs = known_inputs[household]
        else:
            inputs = [i for i in rows if i.account_id in mine]
        out.inputs[household] = inputs
        out.replays[household] = replay_household(facts, inputs, actions, identity=identity)
    return out


def _state(row: Any) -> LotState:
    return tuple(row[c] for c in LOT_STATE)


LOT_STATE = (
    "symbol",
    "quantity",
    "cost_basis",
    "acquired_on",
    "holding_start",
    "seq",
    "wash_adjustment",
    "replacement",
    "purchase_id",
    "sleeve",
)


async def rebuild(
    session: AsyncSession,
    households: Iterable[str],
    symbols: Iterable[str] | None = None,
    *,
    members: dict[str, list[AccountFacts]] | None = None,
    known_inputs: dict[str, list[Input]] | None = None,
) -> Replays:
    """Replay households (only the family of ``symbols`` when given) and replace their
    accounts' stored lots and realized gains with the replay's (all of them, in the
    family: no diff, so nothing the replay holds can be left out). Updates the
    households' last day and sequence counter."""
    result = await replay(session, households, symbols, members=members, known_inputs=known_inputs)
    family = sorted(result.family) if result.family is not None else None
    fresh = set(known_inputs or ())
    stored_for = [f.account_id for h, fs in result.members.items() if h not in fresh for f in fs]
    old_lots = await repo.derived_lots(session, stored_for, family)
    origins: dict[str, tuple[str, str | None]] = {}
    fill_ids: dict[str, str] = {}
    for inputs in result.inputs.values():
        for i in inputs:
            if i.kind == FILL:
                origins[i.trade_id] = ("fill", i.ref)
                fill_ids[i.trade_id] = i.ref
            elif i.kind == ADJUST:
                origins[i.trade_id] = (RECONCILIATION, None)
            elif i.kind != MOVE:
                origins[i.trade_id] = ("opening-balance", None)
    lots: list[dict[str, Any]] = []
    gains: list[dict[str, Any]] = []
    for r in result.replays.values():
        lots += lot_rows(r.ledger.lots(), origins)
        gains += gain_rows(r.ledger.disposals, fill_ids)
    await repo.replace_derived(session, stored_for, family, lots, gains)
    result.lot_rows = lots
    result.lots_before = {(row.account_id, row.lot_id): _state(row._mapping) for row in old_lots}
    result.lots_after = {(r["account_id"], r["lot_id"]): _state(r) for r in lots}
    for household, r in result.replays.items():
        day = r.last_day
        if family is None:
            await repo.reset_household_state(session, household, day, r.ledger.seq)
        else:
            await repo.set_household_states(session, {household: (day, r.ledger.seq)})
    return result


async def request_restated(
    session: AsyncSession,
    accounts: Iterable[str],
    *,
    cause: str,
    fill_ids: Sequence[str] = (),
    action_id: str | None = None,
    caused_by: Mapping[str, uuid.UUID | Cause] | uuid.UUID | None = None,
) -> list[str]:
    """Ask for holdings-reconciled of ``accounts`` that have a ledger (published by the
    snapshot loop, coalesced per account), following from ``caused_by`` (the event that
    changed them, one for all or per account) in its trace (a ``Cause``'s) or the current
    one."""
    wanted = sorted(set(accounts))
    with_books = sorted(await repo.existing_accounts(session, wanted)) if wanted else []
    here = Cause.here()
    rows = []
    for a in with_books:
        given = caused_by.get(a) if isinstance(caused_by, Mapping) else caused_by
        if not isinstance(given, Cause) or not given.traceparent:
            given = Cause(given.id if isinstance(given, Cause) else given, *_trace(here))
        rows.append(
            {
                "account_id": a,
                "cause": cause,
                "fill_ids": list(fill_ids),
                "action_id": action_id,
                "cause_event_id": given.id,
                "traceparent": given.traceparent,
                "tracestate": given.tracestate,
            }
        )
    await repo.request_snapshots(session, rows)
    return with_books


def _trace(cause: Cause) -> tuple[str | None, str | None]:
    return cause.traceparent, cause.tracestate
