"""A custodian's day into the ledger before the comparison (docs/custodian-files.md, *What
ingest does with each file*), against the real PostgreSQL: cash transactions, client-directed
trades, trades Ballast ordered, transfers, corporate actions (once, and held while not in
sync), prices, the same day twice, and the original files kept."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common import book_loads as loads
from ballast_common.book_loads import LoadOptions
from ballast_common.contracts.events import FillsReceivedV1
from ballast_common.db import Database
from ballast_common.errors import InvalidInput
from ballast_common.testing import outbox_events, unit_of_work
from sqlalchemy import text
from taxlot_svc import custodian_day, service, snapshots
from taxlot_svc.book_load import SPEC as BOOK_SPEC
from taxlot_svc.settings import Settings

pytestmark = pytest.mark.integration

TENANT = "acme"
LEDGER_AS_OF = date(2026, 11, 30)
DAY = date(2026, 12, 4)
NEXT_DAY = date(2026, 12, 7)
SPEC = custodian_day.spec(Settings())
Lot = tuple[str, str, str, str, str, str]  # account, symbol, lot id, quantity, acquired, basis


def csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 700):
        yield data[i : i + 700]


async def stage(db: Database, spec: Any, load_id: str, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        async with unit_of_work(db, "taxlot-svc") as uow:
            await loads.stage_file(uow.session, spec, TENANT, load_id, name, _chunks(content))


async def apply(db: Database, spec: Any, load_id: str, as_of: date) -> dict[str, Any]:
    async with unit_of_work(db, "taxlot-svc") as uow:
        return await loads.apply(uow, spec, load_id, LoadOptions(as_of=as_of, tenant=TENANT))


async def rows(db: Database, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        return [dict(r._mapping) for r in await s.execute(text(sql), params)]


class Book:
    """Two accounts of one run loaded from files: A holds AAA (L1) and BBB (L2), B holds
    CCC (M1)."""

    def __init__(self) -> None:
        run = uuid.uuid4().hex[:6]
        self.run = run
        self.a, self.b = f"IA-{run}", f"IB-{run}"
        self.aaa, self.bbb, self.ccc = (f"{s}{run.upper()}" for s in ("A", "B", "C"))
        self.custodian = f"ing{run}"
        self.cash = {self.a: "1000.00", self.b: "25.50"}

    def files(self) -> dict[str, bytes]:
        lots = [
            f"{self.a},{self.aaa},L1,10,2024-01-02,1000.00",
            f"{self.a},{self.bbb},L2,5,2025-06-01,500.00",
            f"{self.b},{self.ccc},M1,40,2020-05-05,4000.00",
        ]
        return {
            "prices.csv": csv(
                "symbol,price", [f"{s},12.5" for s in (self.aaa, self.bbb, self.ccc)]
            ),
            "accounts.csv": csv(
                "account_id,household_id,name",
                [f"{self.a},HI-{self.run},one", f"{self.b},HJ-{self.run},two"],
            ),
            "cash.csv": csv("account_id,amount", [f"{a},{c}" for a, c in self.cash.items()]),
            "positions.csv": csv(
                "account_id,symbol,quantity",
                [f"{self.a},{self.aaa},10", f"{self.a},{self.bbb},5", f"{self.b},{self.ccc},40"],
            ),
            "lots.csv": csv("account_id,symbol,lot_id,quantity,acquired_on,cost_basis", lots),
        }

    def lots(self) -> list[Lot]:
        return [
            (self.a, self.aaa, "L1", "10", "2024-01-02", "1000.00"),
            (self.a, self.bbb, "L2", "5", "2025-06-01", "500.00"),
            (self.b, self.ccc, "M1", "40", "2020-05-05", "4000.00"),
        ]

    def day(
        self,
        lots: list[Lot],
        cash: dict[str, str],
        transactions: list[str] = (),  # type: ignore[assignment]
        actions: list[str] | None = None,
        as_of: date = DAY,
        price: str = "12.5",
    ) -> dict[str, bytes]:
        day = as_of.isoformat()
        positions: dict[tuple[str, str], Decimal] = {}
        for account, symbol, _, quantity, _, _ in lots:
            key = (account, symbol)
            positions[key] = positions.get(key, Decimal(0)) + Decimal(quantity)
        symbols = sorted({lot[1] for lot in lots} | {self.aaa, self.bbb, self.ccc})
        files = {
            "prices.csv": csv("symbol,price,as_of", [f"{s},{price},{day}" for s in symbols]),
            "cash.csv": csv("account_id,amount,as_of", [f"{a},{c},{day}" for a, c in cash.items()]),
            "positions.csv": csv(
                "account_id,symbol,quantity,as_of",
                [f"{a},{s},{q},{day}" for (a, s), q in positions.items()],
            ),
            "lots.csv": csv(
                "account_id,symbol,lot_id,quantity,acquired_on,cost_basis,as_of",
                [",".join([*lot, day]) for lot in lots],
            ),
            "transactions.csv": csv(
                "transaction_id,account_id,type,symbol,quantity,amount,price,trade_date,"
                "settle_date,lot_id,description",
                list(transactions),
            ),
        }
        if actions is not None:
            files["corporate_actions.csv"] = csv(
                "action_id,type,symbol,effective_date,new_symbol,numerator,denominator,"
                "ratio,cash_per_share,basis_percent",
                actions,
            )
        return files

    def load_id(self, day: date = DAY, digest: str = "abc123") -> str:
        return f"{self.custodian}-{day.isoformat()}-{digest}"

    async def reconcile(
        self, db: Database, files: dict[str, bytes], day: date = DAY, spec: Any = SPEC
    ) -> Any:
        load_id = self.load_id(day)
        await stage(db, spec, load_id, files)
        return await apply(db, spec, load_id, day)


@pytest.fixture
async def book(taxlot_db: Database) -> Book:
    made = Book()
    await stage(taxlot_db, BOOK_SPEC, f"book-{made.run}", made.files())
    await apply(taxlot_db, BOOK_SPEC, f"book-{made.run}", LEDGER_AS_OF)
    return made


async def cash_of(db: Database, account: str) -> Decimal:
    [row] = await rows(db, "SELECT cash FROM account_books WHERE account_id = :a", a=account)
    return Decimal(row["cash"])


async def lots_of(db: Database, account: str) -> list[tuple[str, str, Decimal, Decimal, date]]:
    found = await rows(
        db,
        "SELECT lot_id, symbol, quantity, cost_basis, acquired_on FROM lots"
        " WHERE account_id = :a ORDER BY lot_id",
        a=account,
    )
    return [
        (r["lot_id"], r["symbol"], r["quantity"], r["cost_basis"], r["acquired_on"]) for r in found
    ]


async def breaks_of(db: Database, load_id: str) -> list[tuple[str, str, str | None, str]]:
    found = await rows(
        db,
        "SELECT account_id, kind, lot_id, policy FROM reconciliation_breaks WHERE load_id = :l"
        " ORDER BY account_id, kind",
        l=load_id,
    )
    return [(r["account_id"], r["kind"], r["lot_id"], r["policy"]) for r in found]


def row(tx: str, account: str, kind: str, symbol: str = "", **more: str) -> str:
    day = DAY.isoformat()
    return ",".join(
        [
            tx,
            account,
            kind,
            symbol,
            more.get("quantity", ""),
            more.get("amount", ""),
            more.get("price", ""),
            more.get("trade_date", day),
            day,
            more.get("lot_id", ""),
            more.get("description", ""),
        ]
    )


async def test_cash_transactions_reach_the_ledger_once_and_reconcile_clean(
    taxlot_db: Database, book: Book
) -> None:
    a, b = book.a, book.b
    transactions = [
        row("T1", a, "dividend", book.aaa, amount="12.34"),
        row("T2", a, "fee", amount="1.50"),
        row("T3", a, "deposit", amount="100.00"),
        row("T4", b, "withdrawal", amount="5.50"),
    ]
    cash = {a: "1110.84", b: "20.00"}
    result = await book.reconcile(taxlot_db, book.day(book.lots(), cash, transactions))

    assert result["transactions"]["outcomes"] == {"cash": 4}
    assert result["breaks"] == dict.fromkeys(result["breaks"], 0)
    assert (await cash_of(taxlot_db, a), await cash_of(taxlot_db, b)) == (
        Decimal("1110.84"),
        Decimal("20.00"),
    )
    entries = await rows(
        taxlot_db,
        "SELECT account_id, fill_id, amount FROM ledger_entries WHERE cause = 'custodian-day'"
        " AND account_id IN (:a, :b) ORDER BY id",
        a=a,
        b=b,
    )
    assert [(e["account_id"], e["fill_id"], e["amount"]) for e in entries] == [
        (a, "T1", Decimal("12.34")),
        (a, "T2", Decimal("-1.50")),
        (a, "T3", Decimal("100.00")),
        (b, "T4", Decimal("-5.50")),
    ]
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        await snapshots.publish_pending(uow, limit=100_000)
    for account, money in cash.items():
        published = await outbox_events(taxlot_db, "holdings-reconciled", account)
        event = published[-1].payload
        assert (event.cause, event.cash) == ("custodian-day", Decimal(money))
        assert [e.payload.cause for e in published].count("custodian-day") == 1

    # the next day's file delivers the same transactions again: nothing is applied twice
    again = await book.reconcile(
        taxlot_db, book.day(book.lots(), cash, transactions, as_of=NEXT_DAY), NEXT_DAY
    )
    assert again["transactions"]["new"] == 0
    assert again["breaks"]["cash"] == 0
    assert await cash_of(taxlot_db, a) == Decimal("1110.84")
    # and the same load applied again answers its first result
    repeated = await apply(taxlot_db, SPEC, book.load_id(), DAY)
    assert repeated["repeated"] is True
    assert await cash_of(taxlot_db, a) == Decimal("1110.84")


async def test_a_client_directed_buy_and_sell_are_applied_as_fills(
    taxlot_db: Database, book: Book
) -> None:
    a = book.a
    transactions = [
        row("T10", a, "buy", book.aaa, quantity="5", amount="101.00", price="20", lot_id="N1"),
        row("T11", a, "sell", book.aaa, quantity="3", amount="449.00", price="150", lot_id="L1"),
    ]
    lots = book.lots()
    lots[0] = (a, book.aaa, "L1", "7", "2024-01-02", "700.00")
    lots.append((a, book.aaa, "N1", "5", DAY.isoformat(), "101.00"))
    result = await book.reconcile(
        taxlot_db, book.day(lots, {a: "1348.00", book.b: "25.50"}, transactions)
    )

    assert result["transactions"]["outcomes"] == {"trade": 2}
    assert await breaks_of(taxlot_db, book.load_id()) == []
    assert await cash_of(taxlot_db, a) == Decimal("1348.00")  # -101.00 + 449.00
    assert await lots_of(taxlot_db, a) == [
        ("L1", book.aaa, Decimal(7), Decimal("700.00"), date(2024, 1, 2)),
        ("L2", book.bbb, Decimal(5), Decimal("500.00"), date(2025, 6, 1)),
        ("N1", book.aaa, Decimal(5), Decimal("101.00"), DAY),
    ]
    [gain] = await rows(
        taxlot_db,
        "SELECT lot_id, quantity, proceeds, gain FROM realized_gains WHERE account_id = :a",
        a=a,
    )
    assert (gain["lot_id"], gain["quantity"], gain["proceeds"], gain["gain"]) == (
        "L1",
        Decimal(3),
        Decimal("449.00"),
        Decimal("149.00"),
    )


async def test_trades_ballast_ordered_change_nothing_and_a_different_quantity_is_not_applied(
    taxlot_db: Database, book: Book
) -> None:
    a = book.a
    fill_id = f"F-{book.run}"
    at = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
    ids = uuid.uuid4()
    fills = [
        FillsReceivedV1(fill_id=fill_id, client_order_id="o1", trade_id=ids, proposal_id=ids,
                        account_id=a, symbol=book.aaa, side="buy", quantity=Decimal(4),
                        price=Decimal(10), executed_at=at),
        FillsReceivedV1(fill_id=f"{fill_id}-s", client_order_id="o2", trade_id=ids,
                        proposal_id=ids, account_id=a, symbol=book.aaa, side="sell",
                        quantity=Decimal(2), price=Decimal(200), executed_at=at, lot_ids=["L1"]),
        FillsReceivedV1(fill_id=f"{fill_id}-t", client_order_id="o3", trade_id=ids,
                        proposal_id=ids, account_id=a, symbol=book.bbb, side="sell",
                        quantity=Decimal(2), price=Decimal(200), executed_at=at, lot_ids=["L2"]),
        FillsReceivedV1(fill_id=f"{fill_id}-b", client_order_id="o4", trade_id=ids,
                        proposal_id=ids, account_id=a, symbol=book.ccc, side="buy",
                        quantity=Decimal(1), price=Decimal(10), executed_at=at),
    ]  # fmt: skip
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        await service.apply_fills(uow, [(f, None) for f in fills])
    cash_before = await cash_of(taxlot_db, a)
    transactions = [
        row("T20", a, "buy", book.aaa, quantity="4", amount="40.00", lot_id=f"fill-{fill_id}"),
        row("T21", a, "sell", book.aaa, quantity="2", amount="400.00", lot_id="L1"),
        row("T22", a, "sell", book.bbb, quantity="1", amount="200.00", lot_id="L2"),  # we sold 2
        # our fill's own id, but a lot of the custodian's naming: ours, not applied again
        row(f"{fill_id}-b", a, "buy", book.ccc, quantity="1", amount="10.00", lot_id="X9"),
    ]
    lots = book.lots()
    lots[0] = (a, book.aaa, "L1", "8", "2024-01-02", "800.00")
    lots[1] = (a, book.bbb, "L2", "4", "2025-06-01", "400.00")
    lots.append((a, book.aaa, f"fill-{fill_id}", "4", DAY.isoformat(), "40.00"))
    lots.append((a, book.ccc, "X9", "1", DAY.isoformat(), "10.00"))
    cash = {a: str(cash_before), book.b: "25.50"}
    result = await book.reconcile(taxlot_db, book.day(lots, cash, transactions))

    assert result["transactions"]["outcomes"] == {"ours": 2, "mismatch": 2}
    mismatch, other_lot = result["transactions"]["not_applied"]
    assert (mismatch["transaction_id"], mismatch["outcome"]) == ("T22", "mismatch")
    assert "sell 2 of lot L2, the custodian 1" in mismatch["reason"]
    assert other_lot["transaction_id"] == f"{fill_id}-b"
    assert "opened other lots than the custodian's X9" in other_lot["reason"]
    assert await cash_of(taxlot_db, a) == cash_before
    # the custodian's L2 and X9 differ from ours: the comparison finds them
    assert await breaks_of(taxlot_db, book.load_id()) == [
        (a, "basis", "L2", "flag"),
        (a, "extra", "X9", "suspend"),
        (a, "missing", f"fill-{fill_id}-b", "suspend"),
        (a, "quantity", "L2", "suspend"),
    ]


async def test_lots_transferred_in_open_and_lots_transferred_out_leave_without_a_sale(
    taxlot_db: Database, book: Book
) -> None:
    a, b = book.a, book.b
    transactions = [
        row("T30", a, "transfer_in", book.ccc, quantity="10", lot_id="T1"),
        row("T31", b, "transfer_out", book.ccc, quantity="40", lot_id="M1"),  # all of M1
        row("T32", a, "transfer_out", book.bbb, quantity="2", lot_id="L2"),  # 2 of its 5
        row("T33", b, "transfer_out", book.ccc, quantity="1", lot_id="NOPE"),
    ]
    lots = [
        book.lots()[0],
        (a, book.bbb, "L2", "3", "2025-06-01", "300.0000"),
        (a, book.ccc, "T1", "10", "2021-03-03", "321.0000"),
    ]
    result = await book.reconcile(
        taxlot_db, book.day(lots, {a: "1000.00", b: "25.50"}, transactions)
    )

    assert result["transactions"]["outcomes"] == {"transfer": 3, "refused": 1}
    [refused] = result["transactions"]["not_applied"]
    assert refused["transaction_id"] == "T33"
    assert refused["reason"] == f"lot NOPE of {book.ccc} is not open here"
    held = await lots_of(taxlot_db, a)
    assert ("T1", book.ccc, Decimal(10), Decimal("321.00"), date(2021, 3, 3)) in held
    # the rest of L2 keeps its basis per share and its date; M1 is gone; no gain realized
    assert ("L2", book.bbb, Decimal(3), Decimal("300.00"), date(2025, 6, 1)) in held
    assert await lots_of(taxlot_db, b) == []
    realized = await rows(
        taxlot_db, "SELECT count(*) AS n FROM realized_gains WHERE account_id = :b", b=b
    )
    assert realized[0]["n"] == 0
    assert await breaks_of(taxlot_db, book.load_id()) == []


async def test_a_corporate_action_of_the_file_is_applied_once(
    taxlot_db: Database, book: Book
) -> None:
    a = book.a
    action = f"SPLIT-{book.run}"
    actions = [f"{action},split,{book.aaa},{DAY.isoformat()},,2,1,,,"]
    lots = book.lots()
    lots[0] = (a, book.aaa, "L1", "20", "2024-01-02", "1000.00")
    cash = {a: "1000.00", book.b: "25.50"}
    first = await book.reconcile(taxlot_db, book.day(lots, cash, actions=actions))
    assert first["corporate_actions"]["applied"] == [action]
    assert await breaks_of(taxlot_db, book.load_id()) == []

    second = await book.reconcile(
        taxlot_db, book.day(lots, cash, actions=actions, as_of=NEXT_DAY), NEXT_DAY
    )
    assert second["corporate_actions"]["repeated"] == [action]
    assert await breaks_of(taxlot_db, book.load_id(NEXT_DAY)) == []
    assert (await lots_of(taxlot_db, a))[0][:3] == ("L1", book.aaa, Decimal(20))
    recorded = await rows(
        taxlot_db, "SELECT action_id FROM corporate_actions WHERE action_id = :x", x=action
    )
    assert len(recorded) == 1


async def test_an_action_the_custodian_has_not_applied_holds_its_holders_until_a_day_agrees(
    taxlot_db: Database, book: Book
) -> None:
    a = book.a
    action = f"SC-{book.run}"
    renamed = f"N{book.run.upper()}"
    actions = [f"{action},symbol-change,{book.bbb},{DAY.isoformat()},{renamed},,,,,"]
    cash = {a: "1000.00", book.b: "25.50"}
    async with taxlot_db.sessions() as s, s.begin():  # the security master knows the new symbol
        await s.execute(text("INSERT INTO prices (symbol, price) VALUES (:s, 1)"), {"s": renamed})
    # the custodian announces the change, but its lots still show the old symbol
    held = await book.reconcile(taxlot_db, book.day(book.lots(), cash, actions=actions))
    assert held["corporate_actions"]["applied"] == [action]
    assert held["accounts_held"] == 1
    assert {(k, p) for _, k, _, p in await breaks_of(taxlot_db, book.load_id())} == {
        ("missing", "suspend"),
        ("extra", "suspend"),
    }
    holds = [e.payload for e in await outbox_events(taxlot_db, "trading-hold-changed", a)]
    assert holds[-1].held is True
    assert holds[-1].reason.startswith(f"corporate action {action} (symbol-change of {book.bbb}")
    assert "is not in sync" in holds[-1].reason

    lots = book.lots()
    lots[1] = (a, renamed, "L2", "5", "2025-06-01", "500.00")
    agreed = await book.reconcile(taxlot_db, book.day(lots, cash, as_of=NEXT_DAY), NEXT_DAY)
    assert (agreed["accounts_held"], agreed["accounts_released"]) == (0, 1)
    holds = [e.payload for e in await outbox_events(taxlot_db, "trading-hold-changed", a)]
    assert holds[-1].held is False


async def test_a_platform_of_tenants_takes_no_action_or_price_from_a_tenants_files(
    taxlot_db: Database, book: Book
) -> None:
    """With custodian_files_set_platform_data off, the day's split is not applied for every
    tenant's holders from one tenant's files: it awaits the platform, and the lot the
    custodian already split is a break that holds its account, naming the action. The
    day's closes are not kept either."""
    shared = custodian_day.spec(Settings(custodian_files_set_platform_data=False))
    a = book.a
    action = f"SPLIT-{book.run}"
    actions = [f"{action},split,{book.aaa},{DAY.isoformat()},,2,1,,,"]
    lots = book.lots()
    lots[0] = (a, book.aaa, "L1", "20", "2024-01-02", "1000.00")
    cash = {a: "1000.00", book.b: "25.50"}
    files = book.day(lots, cash, actions=actions, price="99.000000")
    result = await book.reconcile(taxlot_db, files, spec=shared)
    assert result["corporate_actions"]["awaiting_the_platform"] == [action]
    assert result["corporate_actions"]["applied"] == [] and result["accounts_held"] == 1
    recorded = await rows(
        taxlot_db, "SELECT action_id FROM corporate_actions WHERE action_id = :x", x=action
    )
    assert recorded == []
    assert (await lots_of(taxlot_db, a))[0][:3] == ("L1", book.aaa, Decimal(10))
    holds = [e.payload for e in await outbox_events(taxlot_db, "trading-hold-changed", a)]
    assert holds[-1].held is True and f"corporate action {action}" in (holds[-1].reason or "")
    kept = await rows(
        taxlot_db, "SELECT price FROM prices WHERE symbol = ANY(:s)", s=[book.aaa, book.ccc]
    )
    assert Decimal("99") not in [r["price"] for r in kept]


async def test_the_days_closes_become_the_prices(taxlot_db: Database, book: Book) -> None:
    cash = {book.a: "1000.00", book.b: "25.50"}
    await book.reconcile(taxlot_db, book.day(book.lots(), cash, price="13.250000"))
    found = await rows(
        taxlot_db, "SELECT price FROM prices WHERE symbol = ANY(:s)", s=[book.aaa, book.ccc]
    )
    assert [r["price"] for r in found] == [Decimal("13.25"), Decimal("13.25")]


async def test_the_original_files_are_kept_and_read_back(client: httpx.AsyncClient) -> None:
    custodian = f"kept{uuid.uuid4().hex[:6]}"
    route = f"/custodian-days/{custodian}/2026-12-04/files"
    content = b"AcctNo,Qty\r\n" + b"N1,100\r\n" * 200_000  # 1.6 MB: two chunks
    digest = hashlib.sha256(content).hexdigest()
    put = await client.put(
        f"{route}/NWC_POS_20261204.csv", content=content, params={"manifest_sha256": digest}
    )
    assert put.status_code == 201, put.text
    kept = put.json()
    assert (kept["size"], kept["sha256"], kept["matches_manifest"], kept["repeated"]) == (
        len(content),
        digest,
        True,
        False,
    )
    again = await client.put(f"{route}/NWC_POS_20261204.csv", content=content)
    assert again.json()["repeated"] is True and again.json()["id"] == kept["id"]
    cut = content[:1000]  # a truncated delivery is kept too, its digest not the manifest's
    short = await client.put(
        f"{route}/NWC_POS_20261204.csv", content=cut, params={"manifest_sha256": digest}
    )
    assert short.json()["matches_manifest"] is False

    newest = await client.get(f"{route}/NWC_POS_20261204.csv")
    assert newest.status_code == 200 and newest.content == cut
    first = await client.get(f"{route}/NWC_POS_20261204.csv", params={"sha256": digest})
    assert first.content == content
    assert first.headers["x-content-sha256"] == digest
    listed = (await client.get(route)).json()["files"]
    assert [f["sha256"] for f in listed] == [hashlib.sha256(cut).hexdigest(), digest]
    missing = await client.get(f"{route}/NWC_LOT_20261204.csv")
    assert missing.status_code == 404 and "was not kept" in missing.json()["detail"]


async def test_a_transaction_without_what_its_type_needs_is_refused_naming_it(
    taxlot_db: Database, book: Book
) -> None:
    transactions = [
        row("T40", book.a, "buy", book.aaa, quantity="1", amount="1.00"),
        row("T41", book.a, "deposit"),
    ]
    load_id = book.load_id()
    cash = {book.a: "1000.00", book.b: "25.50"}
    await stage(taxlot_db, SPEC, load_id, book.day(book.lots(), cash, transactions))
    async with taxlot_db.sessions() as s, s.begin():
        found = await loads.validate(s, SPEC, load_id, LoadOptions(as_of=DAY, tenant=TENANT))
    assert [(p["file"], p["line"], p["column"], p["message"]) for p in found["problems"]] == [
        ("transactions.csv", 2, "lot_id", "a buy needs lot_id"),
        ("transactions.csv", 3, "amount", "a deposit needs amount"),
    ]
    with pytest.raises(InvalidInput, match="nothing was applied"):
        await apply(taxlot_db, SPEC, load_id, DAY)
    assert await cash_of(taxlot_db, book.a) == Decimal("1000.00")


async def test_a_trade_the_fill_path_refuses_is_reported_and_the_others_stand(
    taxlot_db: Database, book: Book
) -> None:
    a = book.a
    transactions = [
        row("T50", a, "sell", book.aaa, quantity="100", amount="100.00", lot_id="Z9"),
        row("T51", a, "buy", book.aaa, quantity="1", amount="0", lot_id="N5"),  # no price at all
        row("T52", a, "deposit", amount="5.00"),
    ]
    cash = {a: "1005.00", book.b: "25.50"}
    result = await book.reconcile(taxlot_db, book.day(book.lots(), cash, transactions))

    assert result["transactions"]["outcomes"] == {"refused": 2, "cash": 1}
    sell, buy = result["transactions"]["not_applied"]
    assert sell["transaction_id"] == "T50" and "Z9" in sell["reason"]
    assert buy["transaction_id"] == "T51" and "not a trade that can be applied" in buy["reason"]
    assert await cash_of(taxlot_db, a) == Decimal("1005.00")
    assert [lot[:3] for lot in await lots_of(taxlot_db, a)] == [
        ("L1", book.aaa, Decimal(10)),
        ("L2", book.bbb, Decimal(5)),
    ]
