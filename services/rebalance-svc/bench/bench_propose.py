"""rebalance-svc's model-change chunk, per account (a benchmark, not a test).

Reads a database that holds a book (default: the 3,000-account `ballast_scale3k` of the local
stack), takes the accounts of a model's run in chunks as the service plans them, and runs
`service.process_chunk` on each (a `rebalance-chunk-requested` of a model change), flushes the
events to the outbox, and ROLLS BACK: the database is left as it was.
Prints JSON: wall and CPU ms per account evaluated (the best of --repeat passes: the machine
is shared), the CPU the garbage collector took, and (with --digest) a hash of every event
payload, stored scenario and trade in flight, to show a change leaves the output byte for
byte the same.

A book that already follows the model's current version trades little, so by default the
model is changed first, in the same rolled-back transaction, as a manager would: its first
two names swapped for two others of the security master and every weight tilted (x0.7 and
x1.3 in turn), so every position of every account trades (`--change none`: the stored
version as it is).

    .venv/bin/python services/rebalance-svc/bench/bench_propose.py --chunks 10 --digest
    .venv/bin/python services/rebalance-svc/bench/bench_propose.py --repeat 1 --profile 40
    .venv/bin/python services/rebalance-svc/bench/bench_propose.py --gc-freeze
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import json
import pstats
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import RebalanceChunkRequestedV1
from ballast_common.db import Database
from ballast_common.uow import UnitOfWork
from rebalance_svc import repository as repo
from rebalance_svc import service
from rebalance_svc.settings import Settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

DEFAULT_URL = "postgresql://ballast:ballast@127.0.0.1:15432/ballast_scale3k"
RUN_ID = uuid.uuid5(uuid.NAMESPACE_URL, "ballast:bench_propose")  # same ids, same bytes


async def chunk_once(
    db: Database,
    settings: Settings,
    model_id: str,
    version: int,
    targets: dict[str, str] | None,
    index: int,
    account_ids: list[str],
    profile: cProfile.Profile | None,
    digest: hashlib._Hash | None,
) -> tuple[float, float, service.Tally]:
    """One chunk through `process_chunk` and the outbox, timed, then rolled back."""
    request = RebalanceChunkRequestedV1(
        run_id=RUN_ID,
        chunk=index,
        chunks=index + 1,
        kind="rebalance",
        trigger="model-change",
        model_id=model_id,
        model_version=version,
        account_ids=account_ids,
    )
    envelope = Envelope(
        type="rebalance-chunk-requested",
        version=1,
        tenant="demo",
        key=f"{RUN_ID}:{index}",
        source="bench",
        payload=request.model_dump(mode="json"),
    )
    uow = UnitOfWork(db.sessions(), "rebalance-svc")
    try:
        connection = await uow.session.connection()
        if targets is not None:  # the model change, in this transaction only
            await connection.execute(
                text(
                    "UPDATE models SET targets = CAST(:t AS jsonb), version = :v "
                    "WHERE model_id = :m"
                ),
                {"t": json.dumps(targets), "v": version, "m": model_id},
            )
        last_id = (
            await connection.execute(text("SELECT coalesce(max(id), 0) FROM outbox"))
        ).scalar()
        if profile is not None:
            profile.enable()
        started, cpu = time.perf_counter(), time.process_time()
        tally = await service.process_chunk(uow, envelope, request, settings)
        await uow.flush_events()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if profile is not None:
            profile.disable()
        assert tally is not None, "the chunk was claimed before: is the run id taken?"
        if digest is not None:
            await _digest(connection, last_id, digest)
        return elapsed, cpu, tally
    finally:
        await uow.rollback()
        await uow.session.close()


async def _digest(connection: AsyncConnection, last_id: int, digest: hashlib._Hash) -> None:
    """Every event payload (the envelope's own ids and times left out), stored scenario and
    trade in flight of the chunk."""
    events = await connection.execute(
        text("SELECT topic, key, value FROM outbox WHERE id > :last ORDER BY id"), {"last": last_id}
    )
    for topic, key, value in events:
        payload = bytes(value).split(b',"payload":', 1)[1][:-1]
        digest.update(f"{topic}\0{key}\0".encode() + payload + b"\n")
    scenarios = await connection.execute(
        text(
            "SELECT account_id, scenario::text FROM scenarios WHERE run_id = :run "
            "UNION ALL SELECT chunk::text, reference::text FROM scenario_references "
            "WHERE run_id = :run ORDER BY 1"
        ),
        {"run": str(RUN_ID)},
    )
    for name, scenario in scenarios:
        digest.update(f"{name}\0{scenario}\n".encode())
    in_flight = await connection.execute(
        text(
            "SELECT trade_id::text, account_id, proposal_id::text, quantity::text "
            "FROM trades_in_flight WHERE run_id = :run ORDER BY trade_id"
        ),
        {"run": str(RUN_ID)},
    )
    for row in in_flight:
        digest.update(("\0".join(row) + "\n").encode())


def changed_targets(targets: dict[str, str], symbols: list[str]) -> dict[str, str]:
    """The model's first two names swapped for the first two securities it does not hold,
    every weight tilted (x0.7, x1.3 in turn), six decimals adding up to the same total."""
    names = sorted(targets)
    others = [s for s in symbols if s not in targets][:2]
    kept = [*names[len(others) :], *others]
    weights = [Decimal(targets[n]) for n in names[len(others) :]] + [
        Decimal(targets[n]) for n in names[: len(others)]
    ]
    tilted = [w * Decimal("0.7" if i % 2 else "1.3") for i, w in enumerate(weights)]
    total = sum(weights, Decimal(0))
    scale = total / sum(tilted, Decimal(0))
    out = {n: (w * scale).quantize(Decimal("0.000001")) for n, w in zip(kept, tilted, strict=True)}
    out[kept[-1]] += total - sum(out.values(), Decimal(0))
    return {n: str(w) for n, w in sorted(out.items())}


@dataclass
class Pass:
    """One pass over the chunks: wall and CPU seconds (CPU also in the garbage collector)."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    gc_seconds: float = 0.0
    evaluated: int = 0
    skipped: int = 0
    trades: int = 0
    chunk_ms: list[float] = field(default_factory=list)

    def per_account(self, seconds: float) -> float:
        return round(1000 * seconds / max(self.evaluated, 1), 2)


class GcClock:
    """CPU time spent in the garbage collector (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds, self._started = 0.0, 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started


async def measure(
    db: Database,
    settings: Settings,
    args: argparse.Namespace,
    change: tuple[int, dict[str, str] | None],
    chunks: list[list[str]],
    profile: cProfile.Profile | None,
    digest: hashlib._Hash | None,
    gc_clock: GcClock,
) -> Pass:
    """Every chunk once, each rolled back."""
    result = Pass()
    in_gc = gc_clock.seconds
    for index, account_ids in enumerate(chunks):
        elapsed, cpu, tally = await chunk_once(
            db, settings, args.model, *change, index, account_ids, profile, digest
        )
        result.seconds += elapsed
        result.cpu_seconds += cpu
        result.chunk_ms.append(round(1000 * elapsed, 1))
        result.evaluated += tally.accounts_evaluated
        result.trades += tally.trades
        result.skipped += len(tally.skipped)
    result.gc_seconds = gc_clock.seconds - in_gc  # (the digest's reads too, when asked)
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    db = Database(args.database_url, "rebalance")
    settings = Settings()
    gc_clock = GcClock()
    try:
        async with db.sessions() as session:
            model = await repo.get_model(session, args.model)
            if model is None:
                raise SystemExit(f"bench_propose: error: no model {args.model!r} in the database")
            chunks = await repo.selected_chunks(
                session, repo.Selection(model_id=args.model), args.chunk_size
            )
            priced = sorted(s.symbol for s in await repo.all_securities(session) if s.price)
        change: tuple[int, dict[str, str] | None] = (model.version, None)
        if args.change == "tilt":
            change = (model.version + 1, changed_targets(dict(model.targets), priced))
        chunks = chunks[: args.chunks]
        if not chunks:
            raise SystemExit(f"bench_propose: error: no account follows {args.model!r}")
        for _ in range(args.warmup):  # imports, caches and the driver's prepared statements
            await chunk_once(db, settings, args.model, *change, 0, chunks[0], None, None)
        if args.gc_freeze:  # what a service would do once started: the collector skips these
            gc.collect()
            gc.freeze()
        profile = cProfile.Profile() if args.profile else None
        digest = hashlib.sha256() if args.digest else None
        passes = [
            await measure(
                db, settings, args, change, chunks, profile, digest if i == 0 else None, gc_clock
            )
            for i in range(args.repeat)
        ]
    finally:
        await db.dispose()
    if profile is not None:
        stats = pstats.Stats(profile, stream=sys.stderr)
        stats.sort_stats(args.sort).print_stats(args.profile)
    best = min(passes, key=lambda p: p.cpu_seconds)
    return {
        "database": args.database_url.rsplit("/", 1)[-1],
        "model": f"{args.model} v{change[0]}" + (" (changed, rolled back)" if change[1] else ""),
        "chunks": len(best.chunk_ms),
        "accounts_evaluated": best.evaluated,
        "accounts_skipped": best.skipped,
        "trades": best.trades,
        "trades_per_account": round(best.trades / max(best.evaluated, 1), 1),
        "passes": len(passes),
        "gc_freeze": args.gc_freeze,
        "best_pass": {
            "seconds": round(best.seconds, 3),
            "ms_per_account": best.per_account(best.seconds),
            "cpu_ms_per_account": best.per_account(best.cpu_seconds),
            "gc_cpu_ms_per_account": best.per_account(best.gc_seconds),
            "ms_per_chunk": best.chunk_ms,
        },
        "cpu_ms_per_account_each_pass": [p.per_account(p.cpu_seconds) for p in passes],
        **({"digest": digest.hexdigest()} if digest is not None else {}),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--model", default="core")
    parser.add_argument("--chunks", type=int, default=5, help="chunks measured (default 5)")
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=1, help="chunks run first, not measured")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best is reported")
    parser.add_argument("--change", choices=("tilt", "none"), default="tilt")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after the warm-up, as a service could once started",
    )
    parser.add_argument("--digest", action="store_true", help="hash the events and scenarios")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile: top N")
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse())), indent=2))
