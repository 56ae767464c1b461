"""A drift scan of one chunk of accounts (`service._scan_chunk`).

The chunk's accounts that can be scanned (active, following published models, with holdings
reconciled and no trades in flight) go to the engine from here, with the reference
`preparation.engine_reference` builds: the plain SMAs (no restrictions) as arrays
(`ballast_engine.drift.SmaArrays`, laid out with numpy by `sma_book_arrays`: no engine
Account and no Decimal per holding), the others (UMAs, restricted SMAs) as engine Accounts
(`engine_input.engine_account`, as `preparation.prepare` makes them). The rest go through
`preparation.prepare`, which says why each is skipped. The verdicts come from the arrays
(`engine_input.scanned_accounts`) and drift-detected is written for the whole chunk at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

import numpy as np
import numpy.typing as npt
from ballast_common.contracts.events import DriftDetectedV1
from ballast_common.uow import UnitOfWork
from ballast_engine.drift import BookArrays, SmaArrays, book_arrays, scan_drift, sma_book_arrays
from ballast_engine.model import Account as EngineAccount
from ballast_engine.model import Book
from ballast_engine.model import Settings as EngineSettings
from pydantic_core import to_json
from sqlmodel.ext.asyncio.session import AsyncSession

from rebalance_svc import preparation
from rebalance_svc import repository as repo
from rebalance_svc import scan_repository as scan_repo
from rebalance_svc.engine_input import (
    SLEEVE,
    AccountRow,
    Defaults,
    DriftVerdict,
    PositionRow,
    engine_account,
    engine_settings,
    run_label,
    scanned_accounts,
    strategy_for,
)
from rebalance_svc.settings import Settings
from rebalance_svc.tables import Account, Model


class Tally(Protocol):
    """What a scan adds to its chunk's counts (`service.Tally` has it)."""

    accounts_evaluated: int
    accounts_out_of_tolerance: int
    skipped: dict[str, str]


async def scan_chunk(
    uow: UnitOfWork, run_id: uuid.UUID, accounts: list[Account], tally: Tally, settings: Settings
) -> list[Account]:
    """drift-detected for every account of the chunk the engine scans (out of tolerance when
    any level is outside its band), the others skipped with their reason in `tally`.
    Returns the accounts out of tolerance."""
    session = uow.session
    chunk = await _read_chunk(session, accounts)
    scanned: list[tuple[BookArrays, dict[str, tuple[str, int]]]] = []
    if chunk.ready:
        scanned.append(await _scan_ready(session, chunk, preparation.defaults_of(settings), tally))
    if chunk.other:  # prepare says why they are skipped (and prepares any that can go)
        prepared = await preparation.prepare(session, chunk.other, settings, [], tax=False)
        tally.skipped.update(prepared.skipped)
        if prepared.accounts:
            book = Book(prepared.reference, tuple(prepared.accounts.values()))
            arrays, failures = book_arrays(book)
            tally.skipped.update({f.account_id: f.error for f in failures})
            scanned.append((arrays, prepared.labels))
    rows = {a.account_id: a for a in accounts}
    out = []
    for arrays, labels in scanned:
        verdicts = scanned_accounts(arrays, scan_drift(arrays))
        for verdict, payload in zip(
            verdicts, drift_payloads(run_id, labels, verdicts), strict=True
        ):
            account = rows[verdict.account_id]
            tally.accounts_evaluated += 1
            tally.accounts_out_of_tolerance += int(verdict.out_of_tolerance)
            uow.publish_json(
                DriftDetectedV1, payload, key=verdict.account_id, tenant=account.tenant
            )
            if verdict.out_of_tolerance:
                out.append(account)
    return out


@dataclass
class _Chunk:
    """A chunk's accounts as read for the scan: each one's row, its models, the books of
    those that may be scanned; `ready` can be, `other` go through `preparation.prepare`."""

    rows: dict[str, AccountRow]
    models: dict[str, Model]
    books: dict[str, scan_repo.SmaBook]
    ready: list[Account]
    other: list[Account]


async def _read_chunk(session: AsyncSession, accounts: list[Account]) -> _Chunk:
    """Three queries: the UMAs' sleeves, the models, the books (cash, holdings, in flight)."""
    active = [a for a in accounts if a.status == "active"]
    uma_ids = [a.account_id for a in active if not a.model_id]
    sleeves = await repo.sleeves_of(session, uma_ids) if uma_ids else {}
    rows = {a.account_id: preparation.account_row(a, sleeves.get(a.account_id, [])) for a in active}
    wanted = sorted({m for row in rows.values() for m in row.model_ids()})
    models = await repo.models(session, wanted)
    followed = [
        a
        for a in active
        if rows[a.account_id].model_ids()
        and all(m in models for m in rows[a.account_id].model_ids())
    ]
    books = await scan_repo.sma_books(session, [a.account_id for a in followed])
    ready = [a for a in followed if a.account_id in books and not books[a.account_id].in_flight]
    taken = {a.account_id for a in ready}
    return _Chunk(rows, models, books, ready, [a for a in accounts if a.account_id not in taken])


async def _scan_ready(
    session: AsyncSession, chunk: _Chunk, defaults: Defaults, tally: Tally
) -> tuple[BookArrays, dict[str, tuple[str, int]]]:
    """The ready accounts laid out for the engine (plain SMAs as arrays, the others as
    engine Accounts), and the model each one's event names."""
    plain = [a for a in chunk.ready if a.model_id and not a.restrictions]
    planned = [a for a in chunk.ready if not (a.model_id and not a.restrictions)]
    rows = chunk.rows
    strategies = [strategy_for(rows[a.account_id]) for a in planned if rows[a.account_id].is_uma]
    shared = await preparation.engine_reference(session, chunk.models, strategies)
    others = await _engine_accounts(session, planned, rows, defaults, shared)
    smas = _sma_arrays(plain, chunk.books, defaults)
    arrays, failures = sma_book_arrays(shared.reference, smas, others)
    tally.skipped.update({f.account_id: f.error for f in failures})
    versions = preparation.model_versions(chunk.models)
    labels = {a.account_id: run_label(rows[a.account_id], versions) for a in chunk.ready}
    return arrays, labels


async def _engine_accounts(
    session: AsyncSession,
    accounts: list[Account],
    rows: dict[str, AccountRow],
    defaults: Defaults,
    shared: preparation.EngineReference,
) -> list[EngineAccount]:
    """UMAs and restricted SMAs as `preparation.prepare` makes them for a scan (no lots: a
    UMA's shares per sleeve its lots name)."""
    if not accounts:
        return []
    ids = [a.account_id for a in accounts]
    umas = [i for i in ids if rows[i].is_uma]
    cash, holdings = await repo.books_of(session, ids, lots=False, sleeve_shares_of=umas)
    sleeve_cash = await repo.sleeve_cash_of(session, umas)
    return [
        engine_account(
            rows[i],
            cash[i],
            [PositionRow(*h) for h in holdings.get(i, ())],
            defaults,
            shared.model_targets,
            shared.equivalence_sets,
            None,
            sleeve_cash.get(i),
        )
        for i in ids
    ]


def _sma_arrays(
    plain: Sequence[Account], books: dict[str, scan_repo.SmaBook], defaults: Defaults
) -> SmaArrays:
    """The plain SMAs as the engine's arrays: one sleeve on the account's model, with the
    account's settings (one object per distinct settings) and its cash."""
    settings: dict[str, EngineSettings] = {}

    def settings_of(account: Account) -> EngineSettings:
        key = json.dumps(account.rebalance_settings, sort_keys=True)
        if key not in settings:
            settings[key] = engine_settings(account.rebalance_settings, defaults)
        return settings[key]

    held = [books[a.account_id] for a in plain]
    counts = [len(b.symbols) for b in held]
    return SmaArrays(
        [a.account_id for a in plain],
        [SLEEVE] * len(plain),
        [a.model_id or "" for a in plain],
        np.array([b.cash for b in held], dtype=np.float64),
        [settings_of(a) for a in plain],
        np.repeat(np.arange(len(plain), dtype=np.int64), counts),
        list(chain.from_iterable(b.symbols for b in held)),
        np.fromiter(chain.from_iterable(b.quantities for b in held), np.float64, sum(counts)),
    )


def drift_payloads(
    run_id: uuid.UUID, labels: dict[str, tuple[str, int]], verdicts: Sequence[DriftVerdict]
) -> list[bytes]:
    """drift-detected's payload for each verdict, byte for byte what
    `engine_input.drift_event_json` writes (a test holds the two equal), with the chunk's
    weights turned into whole millionths with numpy and written in one string operation,
    rather than a few per security."""
    counts = [len(v.symbols) for v in verdicts]
    n = sum(counts)
    weights = np.fromiter(
        chain(
            chain.from_iterable(v.target for v in verdicts),
            chain.from_iterable(v.current for v in verdicts),
        ),
        np.float64,
        2 * n,
    )
    micro = micro_units(weights)
    target, current = micro[:n], micro[n:]
    drift = current - target
    size = np.abs(drift)
    symbols = list(chain.from_iterable(v.symbols for v in verdicts))
    quoted = {s: to_json(s).decode() for s in set(symbols)}
    args = chain.from_iterable(
        zip(
            map(quoted.__getitem__, symbols),
            (target // 1_000_000).tolist(),
            (target % 1_000_000).tolist(),
            (current // 1_000_000).tolist(),
            (current % 1_000_000).tolist(),
            np.where(drift < 0, "-", "").tolist(),
            (size // 1_000_000).tolist(),
            (size % 1_000_000).tolist(),
            strict=True,
        )
    )
    parts = ((_SECURITY + "\0") * n % tuple(args)).split("\0")
    out = []
    start = 0
    for verdict, count in zip(verdicts, counts, strict=True):
        model_id, version = labels[verdict.account_id]
        out.append(
            (
                f'{{"run_id":"{run_id}","account_id":{to_json(verdict.account_id).decode()},'
                f'"model_id":{to_json(model_id).decode()},"model_version":{int(version)},'
                f'"total_value":"{verdict.total_value:f}",'
                f'"max_abs_drift":"{verdict.max_abs_drift:f}",'
                f'"tolerance":"{verdict.tolerance:f}",'
                f'"out_of_tolerance":{"true" if verdict.out_of_tolerance else "false"},'
                f'"securities":[{",".join(parts[start : start + count])}]}}'
            ).encode()
        )
        start += count
    return out


_SECURITY = '{"symbol":%s,"target_weight":"%d.%06d","current_weight":"%d.%06d","drift":"%s%d.%06d"}'


def micro_units(weights: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Each weight as drift-detected writes it (`max(w, 0.0)` with six decimals, the float
    rounded once: `engine_input._weight`) in whole millionths. `w * 1e6` rounded to the
    nearest integer is that number unless the product lies within its rounding error of a
    half (or is too large to hold whole numbers): those few are read from the decimal text."""
    clamped = np.where(weights < 0.0, 0.0, weights)
    scaled = clamped * 1e6
    out = np.rint(np.where(np.isfinite(scaled), scaled, 0.0)).astype(np.int64)
    half = np.abs(scaled - np.floor(np.where(np.isfinite(scaled), scaled, 0.0)) - 0.5)
    unsure = ~(half > 4 * np.spacing(np.abs(scaled))) | ~(scaled < 2.0**52)
    for i in np.nonzero(unsure)[0].tolist():
        out[i] = int(f"{float(clamped[i]) + 0.0:.6f}".replace(".", ""))
    return out
