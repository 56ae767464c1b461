"""account-svc's part of a book load: households, accounts, UMA sleeves and restrictions from
the book files (docs/book-files.md), checked by the rules the REST path applies and written
with set-based statements; every loaded account is announced as REST would announce it."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ballast_common.book_loads import BookLoadSpec, LoadProblem, StagedLoad
from ballast_common.contracts.book_files import files_of
from ballast_common.errors import Conflict
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc import repository as repo
from account_svc import rules
from account_svc.schemas import AccountIn, Band, RestrictionIn, Strategy, TaxSettings
from account_svc.service import OPENED_STATUS, announce_accounts, record_book_load
from account_svc.tables import book_loads

FILES = files_of("account-svc")
EVENTS_PAGE = 2000  # accounts read back and announced at a time
INTERIOR = "interior"


def _json_decimal(value: Decimal) -> str:
    return format(value, "f")  # as the wire types serialize a Decimal


DEFAULTS = repo.AccountDefaults(
    status=OPENED_STATUS,
    account_type=AccountIn.model_fields["account_type"].default,
    auto_approve=AccountIn.model_fields["auto_approve"].default,
    tax_settings=TaxSettings().model_dump(mode="json"),
    rebalance_range=Strategy.model_fields["rebalance_range"].default,
    interior_pct=_json_decimal(Strategy.model_fields["interior_pct"].default),
    band_kind=Band.model_fields["kind"].default,
    restriction_source=RestrictionIn.model_fields["source"].default,
)


async def checks(session: AsyncSession, staged: StagedLoad) -> list[LoadProblem]:
    """Every staged row that breaks a rule of account-svc, named by file, line and column."""
    await repo.plan_for_staged_files(session, staged)
    problems: list[LoadProblem] = []
    for check in (_identifiers, _tenants, _households, _accounts, _sleeves, _restrictions):
        problems += await check(session, staged)
    order = {f.name: i for i, f in enumerate(FILES)}
    return sorted(problems, key=lambda p: (order[p.file], p.line, p.column, p.message))


async def apply(uow: UnitOfWork, staged: StagedLoad) -> dict[str, Any]:
    """Add the staged households and accounts, then announce every account (account-changed)
    page by page; returns the counts."""
    now = datetime.now(UTC)  # the checks have run in this transaction: the plan is set
    households = await repo.insert_staged_households(uow.session, staged, now)
    accounts, umas, restrictions = await repo.insert_staged_accounts(
        uow.session, staged, DEFAULTS, f"book-load:{staged.load_id}", now
    )
    expected = staged.rows["accounts.csv"]
    if accounts != expected:  # opened over REST between the checks and this insert
        raise Conflict(
            f"{expected - accounts} account(s) of accounts.csv were opened while the load ran; "
            "nothing was applied: validate the load again"
        )
    account_repository = repo.PostgresAccountRepository(uow.session)
    after = 0
    while page := await repo.staged_accounts_page(uow.session, staged, after, EVENTS_PAGE):
        await announce_accounts(uow, account_repository, page)
        await uow.flush_events()
        after = page[-1].line
    counts = {
        "households": households,
        "accounts": accounts,
        "umas": umas,
        "restrictions": restrictions,
    }
    await record_book_load(account_repository, staged, counts)
    return counts


BOOK_LOAD = BookLoadSpec(files=FILES, table=book_loads, checks=checks, apply=apply)


async def _identifiers(session: AsyncSession, staged: StagedLoad) -> list[LoadProblem]:
    problems: list[LoadProblem] = []
    for file, column in (
        ("households.csv", "household_id"),
        ("accounts.csv", "account_id"),
        ("accounts.csv", "household_id"),
        ("sleeves.csv", "sleeve_id"),
    ):
        rows = await repo.staged_values_not_matching(
            session, staged, file, column, rules.IDENTIFIER_PATTERN
        )
        problems += [
            LoadProblem(file, line, column, rules.not_an_identifier(value)) for line, value in rows
        ]
    return problems


async def _tenants(session: AsyncSession, staged: StagedLoad) -> list[LoadProblem]:
    """Rows that name another tenant than the caller's: a load is its caller's tenant's."""
    problems: list[LoadProblem] = []
    for file in ("households.csv", "accounts.csv"):
        problems += [
            LoadProblem(
                file,
                line,
                "tenant",
                f"tenant {tenant} is not yours: this load is tenant {staged.tenant}'s (the "
                "bearer token's); leave the column empty or write it",
            )
            for line, tenant in await repo.staged_rows_of_another_tenant(session, staged, file)
        ]
    return problems


async def _households(session: AsyncSession, staged: StagedLoad) -> list[LoadProblem]:
    rows = await repo.staged_households_of_other_tenants(session, staged)
    return [
        LoadProblem(
            "households.csv",
            line,
            "tenant",
            f"household {household} belongs to tenant {known}, not {tenant}",
        )
        for line, household, tenant, known in rows
    ]


async def _accounts(session: AsyncSession, staged: StagedLoad) -> list[LoadProblem]:
    file = "accounts.csv"
    problems = [
        LoadProblem(file, line, "account_id", f"account {account} already exists")
        for line, account in await repo.staged_accounts_existing(session, staged)
    ]
    for line, household, tenant, known in await repo.staged_account_households(session, staged):
        if known is None:
            problems.append(
                LoadProblem(
                    file,
                    line,
                    "household_id",
                    f"unknown household {household}: it is neither in households.csv nor known",
                )
            )
        else:
            problems.append(
                LoadProblem(
                    file,
                    line,
                    "tenant",
                    f"tenant {tenant} differs from tenant {known} of household {household}",
                )
            )
    problems += [
        LoadProblem(file, line, "model_id", rules.unknown_model(model))
        for line, model in await repo.staged_unknown_models(session, staged, file)
    ]
    for (
        line,
        account,
        model,
        sleeves,
        rebalance_range,
        interior_pct,
    ) in await repo.staged_account_strategies(session, staged, INTERIOR):
        if model is not None and sleeves:
            message = f"{rules.UMA_HAS_NO_MODEL}: account {account} has sleeves in sleeves.csv"
            problems.append(LoadProblem(file, line, "model_id", message))
        elif model is None and not sleeves:
            message = (
                f"account {account} follows no model: give its model_id, or its sleeves in "
                "sleeves.csv for a UMA"
            )
            problems.append(LoadProblem(file, line, "model_id", message))
        if not sleeves and (rebalance_range is not None or interior_pct is not None):
            column = "rebalance_range" if rebalance_range is not None else "interior_pct"
            message = f"{column} is a UMA's setting: account {account} has no sleeves"
            problems.append(LoadProblem(file, line, column, message))
        elif interior_pct is not None and rebalance_range != INTERIOR:
            message = f"interior_pct is given but rebalance_range is {rebalance_range or 'target'}"
            problems.append(LoadProblem(file, line, "interior_pct", message))
    for column, bound, inclusive in (
        ("short_term_rate", rules.MAX_FRACTION, False),
        ("long_term_rate", rules.MAX_FRACTION, False),
        ("cash_target", rules.MAX_FRACTION, True),
        ("interior_pct", rules.MAX_PERCENT, False),
    ):
        problems += await _above(session, staged, file, column, bound, inclusive)
    return problems


async def _sleeves(session: AsyncSession, staged: StagedLoad) -> list[LoadProblem]:
    file = "sleeves.csv"
    problems = await _unstaged_accounts(session, staged, file, "strategy")
    problems += [
        LoadProblem(file, line, "model_id", rules.unknown_model(model))
        for line, model in await repo.staged_unknown_models(session, staged, file)
    ]
    for line, account, total, count in await repo.staged_sleeve_sets(
        session, staged, rules.WEIGHT_TOLERANCE, rules.MAX_SLEEVES
    ):
        if abs(total - 1) > rules.WEIGHT_TOLERANCE:
            message = f"account {account}: {rules.weights_do_not_add_up(total)}"
            problems.append(LoadProblem(file, line, "weight", message))
        if count > rules.MAX_SLEEVES:
            message = f"account {account} has {count} sleeves: at most {rules.MAX_SLEEVES}"
            problems.append(LoadProblem(file, line, "sleeve_id", message))
    problems += [
        LoadProblem(file, line, "model_id", rules.model_has_two_sleeves(model))
        for line, _, model in await repo.staged_repeated_sleeve_models(session, staged)
    ]
    problems += [
        LoadProblem(file, line, "band_width", rules.band_too_wide(kind, width, weight, low, high))
        for line, kind, width, weight, low, high in await repo.staged_bands_outside(
            session,
            staged,
            rules.band_bounds,
            rules.BAND_KINDS,
            DEFAULTS.band_kind,
            rules.BAND_EPS,
        )
    ]
    for column in ("weight", "band_width"):
        problems += await _above(session, staged, file, column, rules.MAX_FRACTION, False)
    return problems


async def _restrictions(session: AsyncSession, staged: StagedLoad) -> list[LoadProblem]:
    file = "restrictions.csv"
    problems = await _unstaged_accounts(session, staged, file, "restrictions")
    problems += [
        LoadProblem(file, line, "value", rules.unknown_list(list_id))
        for line, list_id in await repo.staged_unknown_lists(session, staged)
    ]
    problems += [
        LoadProblem(file, line, "value", rules.not_a_symbol(value))
        for line, value in await repo.staged_restrictions_not_on_symbols(
            session, staged, rules.SYMBOL_PATTERN
        )
    ]
    problems += [
        LoadProblem(
            file,
            line,
            "account_id",
            f"account {account} has {count} restrictions: at most {rules.MAX_RESTRICTIONS}",
        )
        for line, account, count in await repo.staged_restriction_counts(
            session, staged, rules.MAX_RESTRICTIONS
        )
    ]
    problems += [
        LoadProblem(
            file,
            line,
            "value",
            f"{rules.restriction_twice(kind, scope, value)} (first on line {first})",
        )
        for line, kind, scope, value, first in await repo.staged_repeated_restrictions(
            session, staged
        )
    ]
    return problems


async def _unstaged_accounts(
    session: AsyncSession, staged: StagedLoad, file: str, what: str
) -> list[LoadProblem]:
    problems: list[LoadProblem] = []
    for line, account, exists in await repo.staged_rows_of_unstaged_accounts(session, staged, file):
        if exists:
            message = (
                f"account {account} exists already and is not in accounts.csv: change its "
                f"{what} with PUT /accounts/{account}/{what}"
            )
        else:
            message = f"unknown account {account}: it is not in accounts.csv"
        problems.append(LoadProblem(file, line, "account_id", message))
    return problems


async def _above(
    session: AsyncSession,
    staged: StagedLoad,
    file: str,
    column: str,
    bound: Decimal,
    inclusive: bool,
) -> list[LoadProblem]:
    rows = await repo.staged_values_above(session, staged, file, column, bound, inclusive=inclusive)
    limit = f"less than {bound}" if inclusive else f"at most {bound}"
    return [LoadProblem(file, line, column, f"{column} must be {limit}") for line, _ in rows]
