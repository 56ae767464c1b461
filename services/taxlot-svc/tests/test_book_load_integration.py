"""Loading the book from files (docs/book-files.md) against the real PostgreSQL: the same book
as REST opening balances, every bad row named by file and line, all or nothing, once."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common import book_loads as loads
from ballast_common.book_loads import LoadOptions
from ballast_common.contracts.events import AccountChangedV1, FillsReceivedV1
from ballast_common.db import Database
from ballast_common.errors import InvalidInput
from ballast_common.outbox import pending_messages
from ballast_common.testing import unit_of_work
from ballast_engine.tax.model import money
from sqlalchemy import text
from taxlot_svc import actions, service, taxes
from taxlot_svc.book_load import SPEC
from taxlot_svc.schemas import AccountHoldingsIn, SplitIn

pytestmark = pytest.mark.integration

D = Decimal
TODAY = date(2026, 12, 6)
AS_OF = date(2026, 11, 30)
OPTIONS = LoadOptions(as_of=AS_OF, tenant="acme")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def symbol() -> str:
    """A security of this test only (corporate actions touch every holder)."""
    return "L" + uuid.uuid4().hex[:7].upper()


def csv(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows]) + "\n"


async def _chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def stage(db: Database, load_id: str, files: dict[str, str]) -> None:
    for name, content in files.items():
        async with unit_of_work(db, "taxlot-svc") as uow:
            await loads.stage_file(
                uow.session, SPEC, OPTIONS.tenant, load_id, name, _chunks(content.encode())
            )


async def problems(db: Database, load_id: str) -> list[tuple[str, int, str, str]]:
    async with db.sessions() as session, session.begin():
        found = await loads.validate(session, SPEC, load_id, OPTIONS)
    return [(p["file"], p["line"], p["column"], p["message"]) for p in found["problems"]]


async def apply(db: Database, load_id: str) -> dict[str, Any]:
    async with unit_of_work(db, "taxlot-svc") as uow:
        return await loads.apply(uow, SPEC, load_id, OPTIONS)


async def account_changed(
    db: Database, account: str, household: str, kind: str = "taxable"
) -> list[str]:
    payload = AccountChangedV1(
        account_id=account,
        household_id=household,
        name=account,
        account_type=kind,
        model_id=None,
        status="active",
        auto_approve=True,
    )
    async with unit_of_work(db, "taxlot-svc") as uow:
        return await taxes.account_changed(uow, payload)


async def rows(db: Database, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        result = await s.execute(text(sql), params)
        return [dict(r._mapping) for r in result]


async def reconciled(db: Database, accounts: list[str]) -> dict[str, list[dict[str, Any]]]:
    """holdings-reconciled in the outbox, per account."""
    async with db.sessions() as s:
        pending = await pending_messages(s, 1_000_000)
    out: dict[str, list[dict[str, Any]]] = {a: [] for a in accounts}
    for m in pending:
        if m.topic == "holdings-reconciled" and m.key in out:
            out[m.key].append(json.loads(m.value))
    return out


# --- one book, stated as files and as REST bodies ----------------------------------------------


def the_book(run: str, side: str) -> dict[str, Any]:
    """Four accounts in three households: several lots per position, two accounts of one
    household holding lots bought the same day, an IRA, an account with cash only (of
    another tenant, in a household of its own). ``side`` makes ids of its own (REST or
    files)."""
    aaa, bbb, ccc = (f"{s}{run[:5].upper()}" for s in ("A", "B", "C"))
    accounts = [
        {
            "id": f"{side}1-{run}",
            "household": f"H{side}A-{run}",
            "type": "taxable",
            "tenant": None,
            "cash": "1000.00",
            "positions": [
                (aaa, [("10", "1000.00", "2024-01-02"), ("5", "600.50", "2025-06-01")]),
                (bbb, [("3.5", "350.00", "2023-03-03")]),
            ],
        },
        {
            "id": f"{side}2-{run}",
            "household": f"H{side}A-{run}",
            "type": "ira",
            "tenant": None,
            "cash": "0.00",
            "positions": [
                (aaa, [("7", "700.00", "2024-01-02")]),
                (ccc, [("1.25", "99.99", "2022-12-30")]),
            ],
        },
        {
            "id": f"{side}3-{run}",
            "household": f"H{side}B-{run}",
            "type": "taxable",
            "tenant": None,
            "cash": "25.50",
            "positions": [(ccc, [("40", "4000.00", "2020-05-05"), ("2", "10.00", "2026-11-30")])],
        },
        {
            "id": f"{side}4-{run}",
            "household": f"H{side}C-{run}",
            "type": "taxable",
            "tenant": "firm2",
            "cash": "50.00",
            "positions": [],
        },
    ]
    return {"symbols": [aaa, bbb, ccc], "accounts": accounts}


def book_files(book: dict[str, Any]) -> dict[str, str]:
    accounts, cash, positions, lots = [], [], [], []
    for a in book["accounts"]:
        accounts.append(
            f"{a['id']},{a['household']},Name of {a['id']},{a['type']},{a['tenant'] or ''}"
        )
        cash.append(f"{a['id']},{a['cash']}")
        for sym, sym_lots in a["positions"]:
            total = sum((D(q) for q, _, _ in sym_lots), D(0))
            positions.append(f"{a['id']},{sym},{total}")
            for k, (q, basis, on) in enumerate(sym_lots, start=1):
                lots.append(f"{a['id']},{sym},opening-{sym}-{k},{q},{on},{basis}")
    return {
        "prices.csv": csv(
            "symbol,price", [f"{s},{10 + i}.5" for i, s in enumerate(book["symbols"])]
        ),
        "accounts.csv": csv("account_id,household_id,name,account_type,tenant", accounts),
        "cash.csv": csv("account_id,amount", cash),
        "positions.csv": csv("account_id,symbol,quantity", positions),
        "lots.csv": csv("account_id,symbol,lot_id,quantity,acquired_on,cost_basis", lots),
    }


def rest_bodies(book: dict[str, Any]) -> dict[str, list[AccountHoldingsIn]]:
    """The book's openings by tenant (a caller opens its own tenant's accounts)."""
    by_tenant: dict[str, list[AccountHoldingsIn]] = {}
    for a in book["accounts"]:
        by_tenant.setdefault(a["tenant"] or "acme", []).append(rest_body(a))
    return by_tenant


def rest_body(a: dict[str, Any]) -> AccountHoldingsIn:
    return AccountHoldingsIn.model_validate(
        {
            "account_id": a["id"],
            "as_of": AS_OF.isoformat(),
            "cash": a["cash"],
            "positions": [
                {
                    "symbol": sym,
                    "lots": [
                        {"quantity": q, "cost_basis": b, "acquired_on": on} for q, b, on in sym_lots
                    ],
                }
                for sym, sym_lots in a["positions"]
            ],
        }
    )


async def everything(db: Database, book: dict[str, Any], side: str, run: str) -> dict[str, Any]:
    """What the book of record holds of a book's accounts, with the side's ids made neutral."""
    ids = [a["id"] for a in book["accounts"]]
    households = sorted({a["household"] for a in book["accounts"]})

    def neutral(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(f"{side}", "<side>", 1) if run in value else value
        if isinstance(value, dict):
            return {k: neutral(v) for k, v in value.items()}
        if isinstance(value, list):
            return [neutral(v) for v in value]
        return value

    found = {
        "books": await rows(
            db,
            "SELECT account_id, tenant, cash, as_of FROM account_books"
            " WHERE account_id = ANY(:ids) ORDER BY account_id",
            ids=ids,
        ),
        "facts": await rows(
            db,
            "SELECT account_id, household_id, account_type FROM accounts"
            " WHERE account_id = ANY(:ids) ORDER BY account_id",
            ids=ids,
        ),
        "lots": await rows(
            db,
            "SELECT account_id, lot_id, seq, symbol, quantity, cost_basis, acquired_on,"
            " holding_start, cause, fill_id, wash_adjustment, replacement, purchase_id, sleeve"
            " FROM lots WHERE account_id = ANY(:ids) ORDER BY account_id, lot_id",
            ids=ids,
        ),
        "inputs": await rows(
            db,
            "SELECT account_id, kind, ref, trade_on, symbol, side, quantity, price, fees,"
            " lot_name, lot_ids, method, sleeve, to_sleeve FROM tax_inputs"
            " WHERE account_id = ANY(:ids) ORDER BY id",
            ids=ids,
        ),
        "ledger": await rows(
            db,
            "SELECT account_id, cause, fill_id, kind, symbol, lot_id, quantity, amount"
            " FROM ledger_entries WHERE account_id = ANY(:ids) ORDER BY account_id, id",
            ids=ids,
        ),
        "households": await rows(
            db,
            "SELECT household_id, last_day, seq FROM households"
            " WHERE household_id = ANY(:hs) ORDER BY household_id",
            hs=households,
        ),
        "events": [
            {k: v for k, v in e.items() if k in ("type", "version", "tenant", "key", "payload")}
            for events in (await reconciled(db, ids)).values()
            for e in events
        ],
    }
    return neutral(found)


async def test_a_file_set_gives_the_book_rest_openings_give(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    run = uuid.uuid4().hex[:8]
    by_rest, by_files = the_book(run, "R"), the_book(run, "F")
    for a in by_rest["accounts"]:  # REST learns household and type from account-svc
        await account_changed(taxlot_db, a["id"], a["household"], a["type"])
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        for tenant, bodies in rest_bodies(by_rest).items():
            await service.open_accounts(uow, tenant, bodies, today=TODAY)

    # The files go through the service's routes, as `ballast book load` sends them.
    load = f"day-{run}"
    for name, content in book_files(by_files).items():
        put = await client.put(
            f"/book-loads/{load}/files/{name}",
            content=content.encode(),
            headers={"content-type": "text/csv"},
        )
        assert put.status_code == 201, put.text
    body = {"as_of": AS_OF.isoformat()}
    checked = await client.post(f"/book-loads/{load}/validate", json=body)
    assert checked.json()["valid"] is True, checked.text
    applied = await client.post(f"/book-loads/{load}/apply", json=body)
    assert applied.status_code == 200, applied.text
    assert applied.json() == {
        "load_id": load,
        "status": "applied",
        "repeated": False,
        "accounts": 4,
        "positions": 5,
        "lots": 7,
        "prices": 3,
        "ledger_entries": 11,
        "households": 3,
        "households_replayed": 0,
        "accounts_restated": 0,
        "holdings_reconciled": 4,
    }
    rest = await everything(taxlot_db, by_rest, "R", run)
    files = await everything(taxlot_db, by_files, "F", run)
    for part in rest:
        assert files[part] == rest[part], part
    assert len(files["lots"]) == 7 and len(files["events"]) == 4
    assert {e["tenant"] for e in files["events"]} == {"acme", "firm2"}

    # The book takes fills alike: the same sale relieves the same lots either way.
    for side in (by_rest, by_files):
        account = side["accounts"][0]["id"]
        await apply_fill(taxlot_db, account, side["symbols"][0], "sell", "12", "150")
    gains = [
        await rows(
            taxlot_db,
            "SELECT lot_id, quantity, proceeds, cost_basis, term, seq FROM realized_gains"
            " WHERE account_id = :a ORDER BY seq",
            a=side["accounts"][0]["id"],
        )
        for side in (by_rest, by_files)
    ]
    assert gains[0] == gains[1] and len(gains[0]) == 2


async def apply_fill(
    db: Database,
    account: str,
    sym: str,
    side: str,
    qty: str,
    price: str,
    on: date = date(2026, 12, 1),
    sleeve: str | None = None,
) -> None:
    fid = uid("ex")
    payload = FillsReceivedV1(
        fill_id=fid,
        client_order_id=f"co-{fid}",
        trade_id=uuid.uuid4(),
        proposal_id=uuid.uuid4(),
        account_id=account,
        symbol=sym,
        side=side,
        quantity=D(qty),
        price=D(price),
        executed_at=datetime(on.year, on.month, on.day, 15, tzinfo=UTC),
        sleeve_id=sleeve,
    )
    async with unit_of_work(db, "taxlot-svc") as uow:
        await service.apply_fill(uow, payload, uuid.uuid4())


async def test_every_bad_row_is_named_and_nothing_is_applied(taxlot_db: Database) -> None:
    run = uuid.uuid4().hex[:6]
    good, taken, no_cash = f"G1-{run}", f"G2-{run}", f"G3-{run}"
    held, acted, unpriced = symbol(), symbol(), symbol()
    # An account with a ledger already, holding a security a split was recorded for.
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        await service.open_accounts(
            uow,
            "acme",
            [
                AccountHoldingsIn.model_validate(
                    {
                        "account_id": taken,
                        "as_of": "2024-01-31",
                        "cash": "1",
                        "positions": [
                            {
                                "symbol": acted,
                                "quantity": "4",
                                "cost_basis": "40",
                                "acquired_on": "2023-01-02",
                            }
                        ],
                    }
                )
            ],
            today=TODAY,
        )
    split = SplitIn(
        action_id=uid("split"),
        type="split",
        symbol=acted,
        on=date(2024, 6, 3),
        numerator=2,
        denominator=1,
    )
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        await actions.apply_corporate_action(uow, split, today=TODAY)
    load = f"bad-{run}"
    await stage(
        taxlot_db,
        load,
        {
            "prices.csv": csv("symbol,price", [f"{held},10", f"{acted},5", "bad sym,1"]),
            "accounts.csv": csv(
                "account_id,household_id,name",
                [
                    f"{good},H-{run},Ada",
                    f"no good!{run},H-{run},Bo",
                    f"{taken},H-{run},Cy",
                    f"{no_cash},H-{run},Di",
                ],
            ),
            "cash.csv": csv(
                "account_id,amount",
                [f"{good},10", f"no good!{run},1", f"{taken},2", f"ZZ-{run},3"],
            ),
            "positions.csv": csv(
                "account_id,symbol,quantity",
                [
                    f"{good},{held},10",
                    f"{good},{unpriced},1",
                    f"{good},{acted},2",
                    f"NOACC-{run},{held},1",
                ],
            ),
            "lots.csv": csv(
                "account_id,symbol,lot_id,quantity,acquired_on,cost_basis,sleeve_id",
                [
                    f"{good},{held},L1,4,2024-01-02,40,",
                    f"{good},{held},L2,5,2024-01-03,50,",
                    f"{good},{unpriced},L3,1,2026-12-01,10,",
                    f"{good},{acted},L4/1,2,2024-01-02,20,",
                    f"{good},OTHER,L5,1,2024-01-02,1,",
                ],
            ),
        },
    )
    found = await problems(taxlot_db, load)
    expected = [
        (
            "accounts.csv",
            3,
            "account_id",
            "account_id must be 1-64 letters, digits, '_', '.' or '-'",
        ),
        ("accounts.csv", 4, "account_id", f"account {taken} already has a ledger"),
        ("accounts.csv", 5, "account_id", f"account {no_cash} has no row in cash.csv"),
        ("cash.csv", 5, "account_id", f"account ZZ-{run} is not in accounts.csv"),
        ("positions.csv", 5, "account_id", f"account NOACC-{run} is not in accounts.csv"),
        ("lots.csv", 6, "account_id", None),  # (none: its account is in accounts.csv)
        (
            "positions.csv",
            5,
            "quantity",
            f"quantity 1 of {held} in account NOACC-{run} differs from the sum of its lots in "
            "lots.csv, 0",
        ),
        (
            "positions.csv",
            3,
            "symbol",
            f"{unpriced} has no price in prices.csv (and taxlot-svc knows none)",
        ),
        (
            "positions.csv",
            2,
            "quantity",
            f"quantity 10 of {held} in account {good} differs from the sum of its lots in "
            "lots.csv, 9",
        ),
        ("lots.csv", 6, "symbol", f"account {good} has no position in OTHER in positions.csv"),
        ("lots.csv", 4, "acquired_on", f"2026-12-01 is later than the as-of date {AS_OF}"),
        ("lots.csv", 5, "lot_id", None),
        ("prices.csv", 4, "symbol", "symbol must be 1-16 of A-Z, 0-9, '.' or '-'"),
        (
            "lots.csv",
            5,
            "acquired_on",
            f"corporate action {split.action_id} (split of {acted} on 2024-06-03) falls between "
            f"a lot's acquisition and as_of {AS_OF}: state the opening balance as of a date "
            "before 2024-06-03",
        ),
    ]
    for file, line, column, message in expected:
        named = [p for p in found if p[:3] == (file, line, column)]
        if message is None:
            if column == "lot_id":
                assert named and "must not contain '/'" in named[0][3]
            else:
                assert not named, named
        else:
            assert (file, line, column, message) in found, (file, line, message, found)
    assert len(found) == 13, found
    future = datetime.now(UTC).date() + timedelta(days=3)  # (REST's rule: today + 1 at most)
    async with taxlot_db.sessions() as session, session.begin():
        later = await loads.validate(session, SPEC, load, LoadOptions(as_of=future, tenant="acme"))
    assert later["problems"] == [
        {
            "file": "accounts.csv",
            "line": 0,
            "column": "as_of",
            "message": f"{future} is in the future",
        }
    ]
    with pytest.raises(InvalidInput) as refused:
        await apply(taxlot_db, load)
    assert "nothing was applied" in refused.value.detail
    assert any(e.field == "positions.csv:2 quantity" for e in refused.value.errors)
    assert await rows(taxlot_db, "SELECT * FROM account_books WHERE account_id = :a", a=good) == []
    assert await rows(taxlot_db, "SELECT * FROM accounts WHERE account_id = :a", a=good) == []


def small_book(account: str, household: str, sym: str, sleeves: bool = False) -> dict[str, str]:
    lots = [f"{account},{sym},T1,6,2024-02-01,600.125,{'core' if sleeves else ''}"]
    lots.append(f"{account},{sym},T2,4,2024-03-01,400.135,{'income' if sleeves else ''}")
    return {
        "prices.csv": csv("symbol,price", [f"{sym},101"]),
        "accounts.csv": csv("account_id,household_id,name", [f"{account},{household},Ann"]),
        "cash.csv": csv("account_id,amount", [f"{account},-12.34"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{account},{sym},10"]),
        "lots.csv": csv("account_id,symbol,lot_id,quantity,acquired_on,cost_basis,sleeve_id", lots),
    }


async def test_applying_twice_applies_once_and_account_changed_after_it_is_harmless(
    taxlot_db: Database,
) -> None:
    account, household, sym = uid("U"), uid("HU"), symbol()
    load = f"twice-{uuid.uuid4().hex[:6]}"
    await stage(taxlot_db, load, small_book(account, household, sym))
    first = await apply(taxlot_db, load)
    again = await apply(taxlot_db, load)
    assert first["repeated"] is False and again["repeated"] is True
    assert {k: v for k, v in again.items() if k != "repeated"} == {
        k: v for k, v in first.items() if k != "repeated"
    }
    [book] = await rows(
        taxlot_db, "SELECT cash FROM account_books WHERE account_id = :a", a=account
    )
    assert book["cash"] == D("-12.34")  # a debit balance is a balance
    lots = await rows(
        taxlot_db,
        "SELECT lot_id, cost_basis FROM lots WHERE account_id = :a ORDER BY lot_id",
        a=account,
    )
    # Bases in cents as the engine rounds them (half-even), whatever the file's decimals.
    assert [(x["lot_id"], x["cost_basis"]) for x in lots] == [
        ("T1", money(D("600.125"))),
        ("T2", money(D("400.135"))),
    ]
    assert [x["cost_basis"] for x in lots] == [D("600.12"), D("400.14")]
    assert len((await reconciled(taxlot_db, [account]))[account]) == 1
    staging = [loads.stage_table(OPTIONS.tenant, load, f) for f in SPEC.files]
    assert (
        await rows(taxlot_db, "SELECT * FROM pg_tables WHERE tablename = ANY(:t)", t=staging) == []
    )
    # account-svc's account-changed for the loaded account says what the files said.
    ledger = await rows(taxlot_db, "SELECT id FROM ledger_entries WHERE account_id = :a", a=account)
    assert await account_changed(taxlot_db, account, household) == []
    assert (
        await rows(taxlot_db, "SELECT id FROM ledger_entries WHERE account_id = :a", a=account)
        == ledger
    )
    assert (
        await rows(taxlot_db, "SELECT * FROM pending_snapshots WHERE account_id = :a", a=account)
        == []
    )


async def test_a_uma_lot_keeps_its_sleeve(taxlot_db: Database) -> None:
    account, sym = uid("UMA"), symbol()
    load = f"uma-{uuid.uuid4().hex[:6]}"
    await stage(taxlot_db, load, small_book(account, uid("HU"), sym, sleeves=True))
    await apply(taxlot_db, load)
    lots = await rows(
        taxlot_db,
        "SELECT lot_id, sleeve FROM lots WHERE account_id = :a ORDER BY lot_id",
        a=account,
    )
    assert lots == [{"lot_id": "T1", "sleeve": "core"}, {"lot_id": "T2", "sleeve": "income"}]
    [event] = (await reconciled(taxlot_db, [account]))[account]
    [position] = event["payload"]["positions"]
    assert [(x["lot_id"], x["sleeve_id"]) for x in position["lots"]] == [
        ("T1", "core"),
        ("T2", "income"),
    ]
    # A sell in the income sleeve relieves the income lot only.
    await apply_fill(taxlot_db, account, sym, "sell", "4", "120", sleeve="income")
    left = await rows(taxlot_db, "SELECT lot_id, sleeve FROM lots WHERE account_id = :a", a=account)
    assert left == [{"lot_id": "T1", "sleeve": "core"}]


async def test_a_household_with_history_or_a_later_action_is_replayed(
    taxlot_db: Database,
) -> None:
    """A loaded lot bought within 30 days after a household member's loss sale washes it;
    a recorded split dated after the as-of date splits a loaded lot held before it: both as
    a REST opening does (the households are replayed, the others written directly)."""
    household, sym, other_sym = uid("HH"), symbol(), symbol()
    seller, joiner, lonely = uid("S"), uid("J"), uid("K")
    await account_changed(taxlot_db, seller, household)
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        await service.open_accounts(
            uow,
            "acme",
            [
                AccountHoldingsIn.model_validate(
                    {
                        "account_id": seller,
                        "as_of": "2026-10-01",
                        "cash": "0",
                        "positions": [
                            {
                                "symbol": sym,
                                "quantity": "10",
                                "cost_basis": "1000",
                                "acquired_on": "2026-01-02",
                            },
                            {
                                "symbol": other_sym,
                                "quantity": "1",
                                "cost_basis": "10",
                                "acquired_on": "2026-01-02",
                            },
                        ],
                    }
                )
            ],
            today=TODAY,
        )
    await apply_fill(taxlot_db, seller, sym, "sell", "10", "80", on=date(2026, 11, 10))  # -200
    split = SplitIn(
        action_id=uid("split"),
        type="split",
        symbol=other_sym,
        on=date(2026, 12, 2),
        numerator=2,
        denominator=1,
    )
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        await actions.apply_corporate_action(uow, split, today=TODAY)
    load = f"hist-{uuid.uuid4().hex[:6]}"
    await stage(
        taxlot_db,
        load,
        {
            "prices.csv": csv("symbol,price", [f"{sym},90", f"{other_sym},5"]),
            "accounts.csv": csv(
                "account_id,household_id,name",
                [f"{joiner},{household},Jo", f"{lonely},{uid('HK')},Ki"],
            ),
            "cash.csv": csv("account_id,amount", [f"{joiner},0", f"{lonely},0"]),
            "positions.csv": csv(
                "account_id,symbol,quantity", [f"{joiner},{sym},10", f"{lonely},{other_sym},3"]
            ),
            "lots.csv": csv(
                "account_id,symbol,lot_id,quantity,acquired_on,cost_basis",
                [
                    f"{joiner},{sym},J1,10,2026-11-20,850",
                    f"{lonely},{other_sym},K1,3,2025-05-05,30",
                ],
            ),
        },
    )
    assert await problems(taxlot_db, load) == []
    result = await apply(taxlot_db, load)
    assert result["households_replayed"] == 2 and result["accounts_restated"] == 0
    [lot] = await rows(
        taxlot_db,
        "SELECT quantity, cost_basis, wash_adjustment, holding_start FROM lots"
        " WHERE account_id = :a",
        a=joiner,
    )
    assert (lot["quantity"], lot["cost_basis"], lot["wash_adjustment"]) == (
        D("10"),
        D("1050.00"),
        D("200.00"),
    )
    [sale] = await rows(
        taxlot_db, "SELECT adjustment FROM realized_gains WHERE account_id = :a", a=seller
    )
    assert sale["adjustment"] == D("200.00")
    [split_lot] = await rows(
        taxlot_db, "SELECT quantity, cost_basis FROM lots WHERE account_id = :a", a=lonely
    )
    assert (split_lot["quantity"], split_lot["cost_basis"]) == (D("6"), D("30.00"))
