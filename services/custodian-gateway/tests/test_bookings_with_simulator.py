"""Each account's share of a block reaches a real custodian simulator process (POST
/allocations, a sell with the lots it names), once: a gateway that dies after sending and
before recording the answer sends again after its restart, and the simulator recognises the
fill ids. Then the simulator's own daily files pass `ballast custodian check`, and their lots
are the ledger the tax engine builds from the same fills (what taxlot-svc books)."""

from __future__ import annotations

import asyncio
import csv
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from ballast_common.db import Database
from ballast_common.testing import outbox_events, unit_of_work
from ballast_engine.tax import TaxLedger
from ballast_engine.tax.model import Fill, LedgerAccount, Side
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient, CustodianUnavailable
from custodian_gateway.settings import Settings
from custodian_gateway.workers import Wakeups, booking_sender, execution_poller, order_sender

from .conftest import LoseResponses

pytest.importorskip("custodian_sim.main")
pytest.importorskip("ballast_cli.main")  # `ballast custodian check`
pytestmark = pytest.mark.integration

SIM_ENV = {
    "SIM_LATENCY_MS": "20",
    "SIM_LATENCY_JITTER_MS": "30",
    "SIM_PARTIAL_FILL_PROBABILITY": "0.5",
    "SIM_MAX_FILLS": "3",
    "SIM_SEED": "5",
    "SIM_LOG_LEVEL": "WARNING",
}
ACCOUNTS = ("ACC-V0", "ACC-V1", "ACC-V2")
STRANGER = "ACC-X"  # its sell names a lot it does not hold: the custodian refuses it
CLOSES = {"AAPL": "190", "MSFT": "400"}
# (symbol, lot id, quantity, acquired on, cost basis) of every account
OPENING = (
    ("AAPL", "L1", "20", "2020-01-02", "1000"),
    ("AAPL", "L2", "20", "2021-01-04", "1500.5"),
    ("MSFT", "M1", "10", "2019-06-03", "2000"),
    ("MSFT", "M2", "10", "2022-06-01", "2500"),
)


def write_book(folder: Path) -> Path:
    folder.mkdir(parents=True)
    accounts = [*ACCOUNTS, STRANGER]
    tables = {
        "accounts.csv": [["account_id", "household_id", "name"]]
        + [[a, f"H-{a}", a] for a in accounts],
        "cash.csv": [["account_id", "amount"]] + [[a, "10000.00"] for a in accounts],
        "prices.csv": [["symbol", "price"], *CLOSES.items()],
        "positions.csv": [["account_id", "symbol", "quantity"]]
        + [[a, s, {"AAPL": "40", "MSFT": "20"}[s]] for a in accounts for s in CLOSES],
        "lots.csv": [["account_id", "symbol", "lot_id", "quantity", "acquired_on", "cost_basis"]]
        + [[a, *lot] for a in accounts for lot in OPENING],
    }
    for name, rows in tables.items():
        with (folder / name).open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    return folder


def trades_of(kit: Any, n: int) -> list[Any]:
    """A buy of a security new to the account, a sell naming its lots (versus purchase) and
    a sell naming none (FIFO)."""
    buy = kit.trades(1, symbol="NVDA", quantity=str(3 + n), side="buy")
    vsp = kit.trades(1, symbol="MSFT", quantity=str(11 + n), side="sell")
    vsp[0] = vsp[0].model_copy(update={"lot_ids": ["M2", "M1"], "estimated_price": Decimal(400)})
    fifo = kit.trades(1, symbol="AAPL", quantity=str(5 + n), side="sell")
    fifo[0] = fifo[0].model_copy(update={"estimated_price": Decimal(190)})
    return [*buy, *vsp, *fifo]


async def booking_counts(db: Database, kit: Any) -> dict[str, int]:
    async with db.sessions() as session:
        return await repo.booking_counts(session, kit.TENANT)


def run_loops(runtime: Any, *loops: Callable[..., Awaitable[None]]) -> list[asyncio.Task[None]]:
    wakeups = Wakeups()
    return [asyncio.create_task(loop(runtime, wakeups)) for loop in loops]


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_allocations_reach_the_simulator_once_and_its_files_match_the_ledger(
    db: Database,
    simulator_process: Callable[..., Awaitable[Any]],
    kit: Any,
    tmp_path: Path,
) -> None:
    sim = await simulator_process(SIM_ENV)
    today = datetime.now(UTC).date()
    loaded = await sim.post("/book", {"folder": str(write_book(tmp_path / "book" / str(today)))})
    assert loaded.status_code == 201, loaded.text
    settings = Settings(
        custodian_url=sim.url,
        custodian_id=kit.CUSTODIAN,
        block_account_id=kit.BLOCK_ACCOUNT,
        block_window_s=0.05,
        send_interval_s=0.05,
        poll_interval_s=0.05,
        booking_interval_s=0.05,
        idle_poll_max_s=0.5,
        max_backoff_s=0.5,
        http_timeout_s=5,
    )
    runtime = SimpleNamespace(settings=settings, uow=lambda: unit_of_work(db, kit.SOURCE))
    payloads = [kit.approved(trades_of(kit, n), a) for n, a in enumerate(ACCOUNTS)]
    stranger = kit.trades(1, symbol="MSFT", quantity="1", side="sell")
    stranger[0] = stranger[0].model_copy(update={"lot_ids": ["NOPE"]})
    payloads.append(kit.approved(stranger, STRANGER))
    await kit.approve(db, *payloads)
    shares = 3 * len(ACCOUNTS) + 1

    # 1. the blocks go out and fill; every share waits to be told to the custodian
    loops = run_loops(runtime, order_sender, execution_poller)
    try:

        async def all_pending() -> bool:
            return await booking_counts(db, kit) == {"pending": shares}

        await kit.until(all_pending, 60, "every share filled and pending")
    finally:
        await stop(loops)

    # 2. the gateway sends them and dies before it records the answer (lost on the way back)
    lossy = LoseResponses(httpx.AsyncHTTPTransport())
    lossy.lose = True
    async with httpx.AsyncClient(transport=lossy, base_url=sim.url, timeout=5) as http:
        with pytest.raises(CustodianUnavailable):
            async with unit_of_work(db, kit.SOURCE) as uow:
                await service.send_bookings(uow, CustodianClient(http), 500, kit.CUSTODIAN)
    assert await booking_counts(db, kit) == {"pending": shares}  # nothing recorded
    first = await sim.get("/stats")
    assert (first["allocations_booked"], first["allocations_refused"]) == (shares - 1, 1)

    # 3. the restarted gateway sends them again: recognised by fill id, booked once
    loops = run_loops(runtime, order_sender, execution_poller, booking_sender)
    try:

        async def all_answered() -> dict[str, int] | None:
            counts = await booking_counts(db, kit)
            return counts if "pending" not in counts else None

        counts = await kit.until(all_answered, 30, "every share booked or refused")
    finally:
        await stop(loops)
    assert counts == {"booked": shares - 1, "refused": 1}
    stats = await sim.get("/stats")
    assert stats["allocations_booked"] == shares - 1 and stats["allocations_refused"] == 1
    assert stats["allocations_received_again"] == shares  # the resend, nothing booked twice

    # 4. another restart has nothing left to send
    async with (
        httpx.AsyncClient(base_url=sim.url, timeout=5) as http,
        unit_of_work(db, kit.SOURCE) as uow,
    ):
        again = await service.send_bookings(uow, CustodianClient(http), 500, kit.CUSTODIAN)
    assert again.claimed == 0
    async with db.sessions() as session:
        refused = await repo.list_allocations(
            session, kit.TENANT, account_id=STRANGER, limit=10, offset=0
        )
    assert [a.booking_reason for a in refused] == [f"lot NOPE is not a lot of account {STRANGER}"]

    # 5. the simulator's daily files pass the check and hold the ledger the fills imply
    written = await sim.post(f"/files/{today}", {"root": str(tmp_path / "files")})
    assert written.status_code == 201, written.text
    folder = Path(written.json()["folder"])
    check = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from ballast_cli.main import main; main()",
        "custodian",
        "check",
        str(folder),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    report, _ = await asyncio.wait_for(check.communicate(), timeout=120)
    assert check.returncode == 0, report.decode()
    assert b"valid" in report.lower()
    fills = [f.payload for f in await outbox_events(db, "fills-received")]
    assert len(fills) == shares
    expected = ledger_lots(fills, today)
    with (folder / "lots.csv").open(newline="") as f:
        written_lots = {
            (r["account_id"], r["lot_id"]): (
                Decimal(r["quantity"]),
                Decimal(r["cost_basis"]),
                r["acquired_on"],
            )
            for r in csv.DictReader(f)
            if r["account_id"] != STRANGER
        }
    assert written_lots == expected
    # the versus-purchase sells closed M2 and took the rest from M1; FIFO took from L1
    assert all((a, "M2") not in written_lots for a in ACCOUNTS)
    assert written_lots[("ACC-V0", "L1")][0] == Decimal(15)
    assert written_lots[("ACC-V0", "L2")][0] == Decimal(20)


def ledger_lots(
    fills: list[Any], today: date
) -> dict[tuple[str, str], tuple[Decimal, Decimal, str]]:
    """The open lots of ACCOUNTS after their opening lots and fills, as the tax engine (and
    so taxlot-svc) books them: a buy's lot is `fill-<fill id>`, a sell relieves the lots it
    names, else FIFO."""
    ledger = TaxLedger(LedgerAccount(a, f"H-{a}") for a in ACCOUNTS)
    for account in ACCOUNTS:
        for symbol, lot_id, quantity, acquired, basis in sorted(OPENING, key=lambda o: o[3]):
            ledger.apply(
                Fill(
                    trade_id=f"opening:{account}:{lot_id}",
                    account=account,
                    on=date.fromisoformat(acquired),
                    symbol=symbol,
                    side=Side.BUY,
                    quantity=Decimal(quantity),
                    price=Decimal(0),
                    fees=Decimal(basis),
                    lot_ids=(lot_id,),
                )
            )
    for fill in sorted(fills, key=lambda f: f.side != "buy"):
        if fill.account_id not in ACCOUNTS:
            continue
        buy = fill.side == "buy"
        ledger.apply(
            Fill(
                trade_id=fill.fill_id,
                account=fill.account_id,
                on=fill.executed_at.astimezone(UTC).date(),
                symbol=fill.symbol,
                side=Side(fill.side),
                quantity=fill.quantity,
                price=fill.price,
                lot_ids=(f"fill-{fill.fill_id}",) if buy else tuple(fill.lot_ids),
            )
        )
    return {
        (lot.account, lot.lot_id): (lot.quantity, lot.cost_basis, lot.acquired.isoformat())
        for account in ACCOUNTS
        for symbol in ("AAPL", "MSFT", "NVDA")
        for lot in ledger.lots(account, symbol)
    }
