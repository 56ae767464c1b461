"""What a run gives the engine, read from rebalance-svc's read model: the accounts that can
go (with their tax context), why the others cannot, and the reference they share.

`engine_reference` is the one assembly of the engine's reference: `prepare` uses it, and so
does the drift scan (`scan.py`) for the accounts it lays out as arrays.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from ballast_common.contracts.events import LossSaleV1
from ballast_engine.model import Account as EngineAccount
from ballast_engine.model import EquivalenceSet, RecentPurchase, Reference, Strategy
from sqlmodel.ext.asyncio.session import AsyncSession

from rebalance_svc import repository as repo
from rebalance_svc import scan_repository as scan_repo
from rebalance_svc.direct_index import DirectIndex, indexes_of
from rebalance_svc.engine_input import (
    WASH_WINDOW,
    AccountRow,
    Defaults,
    EquivalenceSetRow,
    ModelSpec,
    PositionRow,
    SleeveRow,
    TaxContext,
    engine_account,
    engine_tax,
    equivalence_sets_for,
    proxy_sets_for,
    recent_purchases,
    reference_for,
    run_label,
    strategy_for,
    swap_back_of,
    tax_context,
)
from rebalance_svc.settings import Settings
from rebalance_svc.tables import Account, Model, Sleeve

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything a run gives the engine: one reference, the accounts ready to go (with
    their tax context, which the engine does not take yet), and why others were skipped."""

    reference: Reference
    accounts: dict[str, EngineAccount] = field(default_factory=dict)
    rows: dict[str, Account] = field(default_factory=dict)
    labels: dict[str, tuple[str, int]] = field(default_factory=dict)  # model id and version
    taxes: dict[str, TaxContext] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    # the direct indexes among the run's models (model id -> direct_index.DirectIndex)
    indexes: dict[str, DirectIndex] = field(default_factory=dict)
    realized: dict[str, float] = field(default_factory=dict)  # net gains realized this year


@dataclass(frozen=True)
class EngineReference:
    """The engine's reference, with the models' targets and the equivalence sets it holds
    (what accounts are built against)."""

    reference: Reference
    model_targets: dict[str, dict[str, Decimal]]
    equivalence_sets: tuple[EquivalenceSet, ...]  # model-hub-svc's and the models' proxies
    model_specs: dict[str, ModelSpec]


@dataclass
class _Books:
    """The accounts' books: cash (absent: never reconciled), holdings, a UMA's cash per
    sleeve, how many trades proposed to each are still in flight, and trading holds."""

    cash: dict[str, Decimal]
    holdings: dict[str, list[repo.HeldRow]]
    sleeve_cash: dict[str, list[dict[str, Any]]]
    in_flight: dict[str, int]
    holds: dict[str, str]  # why an account is held from trading (trading-hold-changed)


@dataclass
class _TaxFacts:
    """What tax-aware rebalancing reads besides the lots, for trade date `trade_date`
    (all empty for a drift scan)."""

    trade_date: date
    households: dict[str, str] = field(default_factory=dict)
    loss_sales: dict[str, list[LossSaleV1]] = field(default_factory=dict)
    realized: dict[str, tuple[int, Decimal, Decimal]] = field(default_factory=dict)
    purchases: dict[str, list[tuple[str, RecentPurchase]]] = field(default_factory=dict)


def defaults_of(settings: Settings) -> Defaults:
    """What an account that set nothing gets, from the service's settings."""
    return Defaults(settings.min_trade_value, settings.security_tolerance, settings.cash_band)


def account_row(account: Account, sleeves: list[Sleeve]) -> AccountRow:
    """An account of the read model, with its sleeves, as the engine input's plain data."""
    return AccountRow(
        account.account_id,
        account.model_id,
        account.rebalance_settings,
        account.restrictions,
        tuple(
            SleeveRow(s.sleeve_id, s.model_id, s.weight, s.band_kind, s.band_width) for s in sleeves
        ),
        account.rebalance_range,
        account.interior_pct,
    )


def model_versions(models: Mapping[str, Model]) -> dict[str, int]:
    """Each model's version, as events name it (`engine_input.run_label`)."""
    return {model_id: model.version for model_id, model in models.items()}


async def prepare(
    session: AsyncSession,
    accounts: list[Account],
    settings: Settings,
    extra_models: list[Model],
    *,
    tax: bool = True,
) -> Prepared:
    """Build the engine's book from the read model; an account that cannot go (inactive, no
    holdings yet, a model of it not published yet) is skipped with its reason. Without `tax`
    (a drift scan) no lots, households or loss sales are read: drift needs none of them (a
    UMA's shares per sleeve its lots name are read, to split its positions)."""
    ids = [a.account_id for a in accounts]
    sleeves = await repo.sleeves_of(session, ids)
    rows = {a.account_id: account_row(a, sleeves.get(a.account_id, [])) for a in accounts}
    models = await repo.models(session, sorted({m for r in rows.values() for m in r.model_ids()}))
    models.update({m.model_id: m for m in extra_models})
    books = await _read_books(session, ids, rows, lots=tax)
    trade_date = datetime.now(UTC).date()
    facts = await _read_tax_facts(session, accounts, trade_date) if tax else _TaxFacts(trade_date)
    strategies = [strategy_for(r) for r in rows.values() if r.is_uma]
    shared = await engine_reference(session, models, strategies)
    prepared = Prepared(
        shared.reference,
        indexes=indexes_of(
            shared.reference, {m: spec.direct_index for m, spec in shared.model_specs.items()}
        ),
    )
    versions = model_versions(models)
    defaults = defaults_of(settings)
    for account in accounts:
        row = rows[account.account_id]
        reason = skip_reason(account, row, models, books)
        if reason is not None:
            prepared.skipped[account.account_id] = reason
            continue
        _add_account(prepared, account, row, books, facts, shared, defaults)
        prepared.labels[account.account_id] = run_label(row, versions)
    return prepared


def skip_reason(
    account: Account, row: AccountRow, models: Mapping[str, Model], books: _Books
) -> str | None:
    """Why the account cannot go to the engine now; None when it can."""
    account_id = account.account_id
    cash, in_flight = books.cash, books.in_flight
    missing = [m for m in row.model_ids() if m not in models]
    if account.status != "active":
        return f"account is {account.status}"
    if account_id in books.holds:
        return f"held from trading: {books.holds[account_id]}"
    if not row.model_ids():
        return "account follows no model"
    if missing:
        return f"model {missing[0]} not published yet"
    if account_id not in cash:
        return "no holdings reconciled yet"
    if account_id in in_flight:
        return (
            f"{in_flight[account_id]} trade(s) proposed earlier are not settled yet (filled "
            "and in the book of record, or rejected): trading again now could trade twice"
        )
    return None


def _add_account(
    prepared: Prepared,
    account: Account,
    row: AccountRow,
    books: _Books,
    facts: _TaxFacts,
    shared: EngineReference,
    defaults: Defaults,
) -> None:
    """The account as the engine takes it (tax-aware when its holdings carry lots), with its
    read-model row and its tax context."""
    account_id = account.account_id
    # popped: the rows of an account built are let go (a chunk holds thousands)
    positions = [PositionRow._make(h) for h in books.holdings.pop(account_id, ())]
    household = facts.households.get(account_id)
    context = tax_context(
        account_id,
        account.account_type,
        household,
        account.tax_settings,
        facts.loss_sales.get(household or account_id, []),
    )
    lots_and_rules = (
        engine_tax(
            context,
            facts.trade_date,
            facts.realized.get(account_id),
            facts.purchases.get(household, ()) if household else (),
            swap_back_of(row.model_ids(), shared.model_specs),
        )
        if any(p.lots for p in positions)
        else None
    )
    prepared.accounts[account_id] = engine_account(
        row,
        books.cash[account_id],
        positions,
        defaults,
        shared.model_targets,
        shared.equivalence_sets,
        lots_and_rules,
        books.sleeve_cash.get(account_id),
    )
    prepared.rows[account_id] = account
    prepared.taxes[account_id] = context
    realized = facts.realized.get(account_id)
    if realized is not None and realized[0] == facts.trade_date.year:
        prepared.realized[account_id] = float(realized[1] + realized[2])


async def _read_books(
    session: AsyncSession, ids: list[str], rows: Mapping[str, AccountRow], *, lots: bool
) -> _Books:
    """Cash and holdings (with lots when `lots`, else a UMA's shares per sleeve its lots
    name), the UMAs' cash per sleeve, trades in flight."""
    umas = [i for i, row in rows.items() if row.is_uma]
    cash, holdings = await repo.books_of(session, ids, lots=lots, sleeve_shares_of=umas)
    sleeve_cash = await repo.sleeve_cash_of(session, umas)
    in_flight = await repo.trades_in_flight(session, ids)
    holds = await repo.trading_holds(session, ids)
    return _Books(cash, holdings, sleeve_cash, in_flight, holds)


async def _read_tax_facts(
    session: AsyncSession, accounts: Sequence[Account], trade_date: date
) -> _TaxFacts:
    """Households, their recent loss sales and purchases (wash-sale window), and the gains
    each account realized this year."""
    ids = [a.account_id for a in accounts]
    households = await repo.households_of(session, ids)
    for a in accounts:
        if a.household_id:
            households.setdefault(a.account_id, a.household_id)
    household_ids = sorted(set(households.values()))
    loss_sales = await _loss_sales(session, ids, household_ids)
    realized = await repo.realized_of(session, ids)
    household_lots = await repo.household_lots(session, household_ids, trade_date - WASH_WINDOW)
    purchases = recent_purchases(household_lots, trade_date)
    return _TaxFacts(trade_date, households, loss_sales, realized, purchases)


async def _loss_sales(
    session: AsyncSession, account_ids: list[str], household_ids: list[str]
) -> dict[str, list[LossSaleV1]]:
    """Recent loss sales by household (or by account where the household is unknown)."""
    rows = await repo.loss_sales_of(session, account_ids, household_ids)
    out: dict[str, list[LossSaleV1]] = defaultdict(list)
    for r in rows:  # typed by the read model's columns already
        out[r.household_id or r.account_id].append(
            LossSaleV1.model_construct(
                symbol=r.symbol,
                sold_on=r.sold_on,
                quantity=r.quantity,
                loss_per_share=r.loss_per_share,
            )
        )
    return out


async def engine_reference(
    session: AsyncSession, models: Mapping[str, Model], strategies: Iterable[Strategy]
) -> EngineReference:
    """The engine's reference for these models and UMA strategies: the security master, the
    live equivalence sets (members the master does not know left out, with a warning) and
    the named security lists restrictions refer to."""
    securities = await scan_repo.securities(session)
    model_targets = {
        model_id: {symbol: Decimal(weight) for symbol, weight in model.targets.items()}
        for model_id, model in models.items()
    }
    specs = {model_id: model_spec(model) for model_id, model in models.items()}
    tenant_sets, left_out = equivalence_sets_for(
        [
            EquivalenceSetRow(e.set_id, tuple(e.members), e.identical)
            for e in await repo.live_equivalence_sets(session)
        ],
        securities,
    )
    proxy_sets, proxies_left_out = proxy_sets_for(specs, model_targets, securities, tenant_sets)
    for problem in left_out + proxies_left_out:
        log.warning("equivalence set member left out", extra={"problem": problem})
    equivalence_sets = tuple(sorted(tenant_sets + proxy_sets, key=lambda e: e.set_id))
    lists = await repo.security_lists(session)
    reference = reference_for(securities, model_targets, strategies, lists, equivalence_sets, specs)
    return EngineReference(reference, model_targets, equivalence_sets, specs)


def model_spec(model: Model) -> ModelSpec:
    """The manager's settings of a read-model model (a row stored before they existed: a
    plain weight model)."""
    return ModelSpec(
        model.kind or "weights",
        model.target_settings or {},
        bool(model.swap_back),
        model.direct_index,
    )
