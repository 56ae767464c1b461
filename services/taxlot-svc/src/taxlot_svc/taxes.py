"""taxlot-svc's tax rules around the book: relief settings and households (from
``account-changed``), identical securities (from ``equivalence-set-changed``), prices
(from ``securities-changed``), realized and unrealized gains,
Form 8949 and the wash-sale blocks. The rules themselves are the tax engine's."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

from ballast_common.contracts.events import (
    AccountChangedV1,
    EquivalenceSetChangedV1,
    SecuritiesChangedV1,
    TaxSettingsV1,
)
from ballast_common.errors import FieldProblem, InvalidInput, NotFound, PermanentMessageError
from ballast_common.uow import UnitOfWork
from ballast_engine.tax import TaxError, TaxRates, Term, estimate_disposals, value_lots
from ballast_engine.tax.tradefile import FORM8949_COLUMNS, form8949_rows, to_csv
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import repository as repo
from taxlot_svc.book import DEFAULT_METHOD, disposal_of, lot_of
from taxlot_svc.opening import check_account_id
from taxlot_svc.replays import (
    AccountFacts,
    facts_of,
    members_of,
    rebuild,
    replay,
    request_restated,
)
from taxlot_svc.schemas import (
    BuyBlockOut,
    GainOut,
    GainsOut,
    LotValueOut,
    SellBlockOut,
    TaxSettingsOut,
    UnrealizedOut,
    WashSaleBlocksOut,
)

log = logging.getLogger(__name__)
ZERO = Decimal(0)
PriceSource = Literal["from-last-fill", "security-master"]


# --- relief method and rates ------------------------------------------------------------------


async def tax_settings(session: AsyncSession, tenant: str, account_id: str) -> TaxSettingsOut:
    """The account's relief method and rates as this service uses them: from account-svc's
    ``account-changed`` (read-only here), or the default (fifo, no rates) before it. 404
    unless the account has a ledger of `tenant`."""
    await _require_book(session, tenant, account_id)
    row = await repo.get_tax_settings(session, account_id)
    if row is None:
        return TaxSettingsOut(account_id=account_id, method=DEFAULT_METHOD, source="default")
    return TaxSettingsOut(
        account_id=account_id,
        method=row.method,
        short_term_rate=row.short_term_rate,
        long_term_rate=row.long_term_rate,
        source="account-changed",
        updated_at=row.updated_at,
    )


def _tax_settings_row(payload: AccountChangedV1) -> dict[str, object]:
    """The relief method and rates account-svc states (an event without ``tax_settings``
    means the account never set them: the contract's defaults). Sells store the method in
    force when they arrive, so a change never rewrites past sales."""
    settings = payload.tax_settings or TaxSettingsV1()
    return {
        "account_id": payload.account_id,
        "method": settings.relief_method,
        "short_term_rate": settings.short_term_rate,
        "long_term_rate": settings.long_term_rate,
    }


# --- consumed events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountChange:
    """One ``account-changed`` as consumed: the tenant that named the account, and the
    event's id (what the restated accounts' snapshots follow from)."""

    payload: AccountChangedV1
    tenant: str | None = None
    event_id: uuid.UUID | None = None


async def account_changed(
    uow: UnitOfWork, payload: AccountChangedV1, tenant: str | None = None
) -> list[str]:
    """One ``account-changed`` (see :func:`accounts_changed`)."""
    event_id = uow.causation.id if uow.causation else None
    return await accounts_changed(uow, [AccountChange(payload, tenant, event_id)])


async def accounts_changed(uow: UnitOfWork, changes: Sequence[AccountChange]) -> list[str]:
    """Record accounts' relief method and tax rates (``tax_settings``), household, type and
    the `tenant` that named them, a batch of events in message order as one at a time would
    leave them. When household or type changes, the old and the new household are replayed
    (wash sales now match across different accounts) and the accounts whose lots changed
    get ``holdings-reconciled`` (cause ``household-change``). Returns those accounts.

    Set-based: the facts, the locks, the tax settings and the moves of accounts without a
    ledger are one statement each per batch; an account with a ledger that moves is replayed
    event by event. A bad event raises (the consumer then retries the batch one by one).

    Locks: the write lock (shared), then every household concerned in sorted order, and the
    facts are read again under them (a concurrent change of an account is seen)."""
    for change in changes:
        _check_account_change(change.payload)
    session = uow.session
    await repo.lock_writes(session, exclusive=False)
    accounts = list(dict.fromkeys(c.payload.account_id for c in changes))
    before = await _lock_households_of(session, accounts, {c.payload.household_id for c in changes})
    last = {c.payload.account_id: c.payload for c in changes}
    await repo.put_tax_settings(session, [_tax_settings_row(p) for p in last.values()])
    facts = {a: (f.household, f.account_type) for a, f in before.items()}
    moves: list[AccountChange] = []
    for change in changes:
        now = (change.payload.household_id, change.payload.account_type)
        if facts[change.payload.account_id] != now:
            moves.append(change)
            facts[change.payload.account_id] = now
    if not moves:
        return []
    with_books = await repo.existing_accounts(
        session, sorted({m.payload.account_id for m in moves})
    )
    tenants: dict[str, str | None] = {}
    for move in moves:  # the tenant last named (an event without one keeps it)
        tenants[move.payload.account_id] = move.tenant or tenants.get(move.payload.account_id)
    # no ledger yet: its opening balance will land in the new household
    await repo.upsert_account_infos(
        session,
        [
            {
                "account_id": a,
                "household_id": facts[a][0],
                "account_type": facts[a][1],
                "tenant": tenants[a],
            }
            for a in sorted(tenants)
            if a not in with_books
        ],
    )
    restated: list[str] = []
    for move in moves:
        if move.payload.account_id in with_books:
            restated += await _move_with_ledger(uow, move)
    return list(dict.fromkeys(restated))


def _check_account_change(payload: AccountChangedV1) -> None:
    account = payload.account_id
    problems = check_account_id(account, "account_id")
    if problems or not payload.household_id or len(payload.household_id) > 64:
        raise PermanentMessageError(
            f"account-changed {account!r}: account and household ids must be 1-64 characters"
        )


async def _lock_households_of(
    session: AsyncSession, accounts: Sequence[str], named: set[str]
) -> dict[str, AccountFacts]:
    """Lock the households of ``accounts`` and those ``named`` (all in sorted order) and
    return the accounts' facts read AFTER the locks are held; an account that moved
    meanwhile gets its new household locked too."""
    facts = await facts_of(session, accounts)
    locked: set[str] = set()
    while True:
        wanted = ({f.household for f in facts.values()} | named) - locked
        if not wanted:
            return facts
        await repo.lock_households(session, sorted(wanted))
        locked |= wanted
        facts = await facts_of(session, accounts)


async def _move_with_ledger(uow: UnitOfWork, move: AccountChange) -> list[str]:
    """An account with a ledger moves household or type: both households replayed, the
    lots that changed journalled and their accounts restated (households locked already)."""
    session = uow.session
    payload = move.payload
    account = payload.account_id
    before = (await facts_of(session, [account]))[account]
    await repo.upsert_account_infos(
        session,
        [
            {
                "account_id": account,
                "household_id": payload.household_id,
                "account_type": payload.account_type,
                "tenant": move.tenant,
            }
        ],
    )
    try:
        replayed = await rebuild(session, sorted({before.household, payload.household_id}))
    except TaxError as exc:  # pragma: no cover - a household change cannot oversell
        raise PermanentMessageError(f"account-changed {account}: {exc}") from exc
    await repo.add_ledger_entries(session, replayed.restatements("household-change", None))
    return await request_restated(
        session, replayed.changed(), cause="household-change", caused_by=move.event_id
    )


async def equivalence_set_changed(uow: UnitOfWork, payload: EquivalenceSetChangedV1) -> bool:
    """Keep each equivalence set's newest version (an older or repeated version changes
    nothing; ``removed`` drops the set). Members of sets marked ``identical`` are
    substantially identical for wash sales from now on: fills applied later and replays
    done later use the sets in force then; what was already applied is not rewritten.
    Returns whether this version was stored."""
    if any(not m.strip() for m in payload.members):
        raise PermanentMessageError(
            f"equivalence-set-changed {payload.set_id} v{payload.version}: a member is an "
            f"empty symbol ({payload.members!r})"
        )
    stored = await repo.upsert_equivalence_set(
        uow.session,
        {
            "set_id": payload.set_id,
            "name": payload.name,
            "members": [] if payload.removed else list(dict.fromkeys(payload.members)),
            "identical": payload.identical,
            "removed": payload.removed,
            "version": payload.version,
        },
    )
    if not stored:
        log.info(
            "equivalence set version not newer, ignored",
            extra={"set_id": payload.set_id, "version": payload.version},
        )
    return stored


async def securities_changed(uow: UnitOfWork, payload: SecuritiesChangedV1) -> None:
    """Keep the security master's last price of each symbol (for unrealized gains)."""
    await repo.upsert_prices(uow.session, {s.symbol: s.price for s in payload.securities})


# --- views --------------------------------------------------------------------------------------


async def realized_gains(
    session: AsyncSession, tenant: str, account_id: str, year: int | None = None
) -> GainsOut:
    """Realized gains of an account (of one year), wash-sale adjusted: code W, the loss
    disallowed, and the Form 8949 gain/loss. Totals count taxable accounts only."""
    await _require_book(session, tenant, account_id)
    rows = await repo.realized_gains(session, account_id, year)
    disposals = [disposal_of(r) for r in rows]
    st = lt = disallowed = permanent = ZERO
    for d in disposals:
        if not d.reportable:
            continue
        if d.term is Term.SHORT:
            st += d.gain_loss
        else:
            lt += d.gain_loss
        disallowed += d.adjustment
        permanent += d.permanent
    settings = await repo.get_tax_settings(session, account_id)
    estimate = None
    if settings is not None and None not in (settings.short_term_rate, settings.long_term_rate):
        assert settings.short_term_rate is not None and settings.long_term_rate is not None
        rates = TaxRates(settings.short_term_rate, settings.long_term_rate)
        estimate = estimate_disposals(disposals, rates)
    gains = []
    for row, d in zip(rows, disposals, strict=True):
        gains.append(
            GainOut(
                fill_id=row.fill_id,
                cause=row.cause,
                lot_id=row.lot_id,
                symbol=row.symbol,
                quantity=row.quantity,
                proceeds=row.proceeds,
                cost_basis=row.cost_basis,
                gain=row.gain,
                term=d.term.value,
                acquired_on=row.acquired_on,
                holding_start=row.holding_start,
                sold_on=row.sold_on,
                code=d.code,
                adjustment=d.adjustment,
                permanent=d.permanent,
                washed_quantity=d.washed_quantity,
                gain_loss=d.gain_loss,
                reportable=d.reportable,
            )
        )
    return GainsOut(
        account_id=account_id,
        year=year,
        short_term=st,
        long_term=lt,
        total=st + lt,
        disallowed=disallowed,
        permanently_disallowed=permanent,
        estimated_tax=estimate,
        gains=gains,
    )


async def form8949_csv(
    session: AsyncSession, tenant: str, account_id: str, year: int | None = None
) -> str:
    """The account's Form 8949 rows, in the columns of ``ballast taxlot form8949`` (an IRA
    has none)."""
    await _require_book(session, tenant, account_id)
    rows = await repo.realized_gains(session, account_id, year)
    return to_csv(FORM8949_COLUMNS, form8949_rows(disposal_of(r) for r in rows))


async def unrealized(
    session: AsyncSession,
    tenant: str,
    account_id: str,
    source: PriceSource,
    on: date | None = None,
) -> UnrealizedOut:
    """Unrealized gain/loss of each open lot at the last fill's price of its security
    (falling back to the security master's) or at the security master's price."""
    await _require_book(session, tenant, account_id)
    day = on or datetime.now(UTC).date()
    rows = await repo.open_lots(session, account_id)
    symbols = sorted({r.symbol for r in rows})
    prices = await repo.master_prices(session, symbols)
    if source == "from-last-fill":
        prices.update(await repo.last_fill_prices(session, symbols))
    lots = [lot_of(r) for r in rows]
    priced = [lot for lot in lots if lot.symbol in prices]
    valued = value_lots(priced, prices, day)
    st = sum((v.unrealized for v in valued if v.term is Term.SHORT), ZERO)
    lt = sum((v.unrealized for v in valued if v.term is Term.LONG), ZERO)
    return UnrealizedOut(
        account_id=account_id,
        on=day,
        prices=source,
        short_term=st,
        long_term=lt,
        total=st + lt,
        lots=[
            LotValueOut(
                lot_id=v.lot.lot_id,
                symbol=v.lot.symbol,
                quantity=v.lot.quantity,
                cost_basis=v.lot.cost_basis,
                holding_start=v.lot.holding_start,
                price=v.price,
                market_value=v.market_value,
                unrealized=v.unrealized,
                term=v.term.value,
            )
            for v in valued
        ],
        unpriced=sorted({lot.symbol for lot in lots} - set(prices)),
    )


async def wash_sale_blocks(
    session: AsyncSession, tenant: str, household_id: str, on: date | None = None
) -> WashSaleBlocksOut:
    """Before the fact, for a household on a day: the securities no account may buy without
    washing a recent loss, and the lots recent purchases would wash if sold at a loss."""
    day = on or datetime.now(UTC).date()
    members = (await members_of(session, [household_id]))[household_id]
    accounts = [f.account_id for f in members]
    with_books = await repo.books(session, accounts, for_update=False, tenant=tenant)
    if not with_books:
        raise NotFound(f"household {household_id} has no account with a ledger")
    try:
        replayed = await replay(session, [household_id])
    except TaxError as exc:  # the stored inputs replayed before; this means a bug
        raise InvalidInput(
            f"household {household_id} cannot be replayed: {exc}",
            [FieldProblem("household_id", str(exc))],
        ) from exc
    ledger = replayed.replays[household_id].ledger
    accounts = sorted(f.account_id for f in members)
    buys = ledger.buy_blocks(accounts[0], day)
    sells = [b for a in accounts for b in ledger.sell_blocks(a, day)]
    return WashSaleBlocksOut(
        household_id=household_id,
        on=day,
        accounts=accounts,
        buy_blocks=[
            BuyBlockOut(
                symbols=list(b.symbols),
                until=b.until,
                quantity=b.quantity,
                loss=b.loss,
                sales=list(b.sales),
                reason=b.reason,
            )
            for b in buys
        ],
        sell_blocks=[
            SellBlockOut(
                account_id=b.account,
                lot_id=b.lot_id,
                symbol=b.symbol,
                washable_quantity=b.washable_quantity,
                until=b.until,
                purchases=list(b.purchases),
                reason=b.reason,
            )
            for b in sells
        ],
    )


async def _require_book(session: AsyncSession, tenant: str, account_id: str) -> None:
    if await repo.get_book(session, account_id, tenant=tenant) is None:
        raise NotFound(f"account {account_id} has no ledger")
