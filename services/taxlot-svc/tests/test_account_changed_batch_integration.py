"""account-changed a batch at a time (``Subscription.batch``) against the real PostgreSQL:
a batch with several accounts, an account named twice and three times, an account without
a ledger and one bad event leaves the book as the same events one at a time do (the bad
one dead-lettered, nothing else lost), wash sales across the new household included."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from ballast_common.consumer import BatchProcessor, Subscription
from ballast_common.contracts.events import AccountChangedV1, FillsReceivedV1, TaxSettingsV1
from ballast_common.db import Database
from ballast_common.errors import PermanentMessageError
from ballast_common.testing import consumer_record, delivery, envelope, unit_of_work
from sqlalchemy import text
from taxlot_svc import repository as repo
from taxlot_svc import service, taxes
from taxlot_svc.handlers import on_account_changed, on_fills_received
from taxlot_svc.replays import facts_of
from taxlot_svc.schemas import HoldingsIn

pytestmark = pytest.mark.integration

ROLES = ("seller", "buyer", "mover", "fresh")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def open_book(db: Database, account: str, lots: list[tuple[str, str, str, str]]) -> None:
    body = HoldingsIn.model_validate(
        {
            "as_of": "2024-02-15",
            "cash": "10000.00",
            "positions": [
                {"symbol": s, "lots": [{"quantity": q, "cost_basis": b, "acquired_on": on}]}
                for s, q, b, on in lots
            ],
        }
    )
    async with unit_of_work(db, "taxlot-svc") as uow:
        await service.open_account(uow, "acme", account, body, today=date(2026, 11, 22))


async def trade(db: Database, account: str, sym: str, side: str, price: str, on: date) -> None:
    fill_id = f"ex-{side}-{account}"  # the world's role in it
    fill = FillsReceivedV1(
        fill_id=fill_id,
        client_order_id=f"co-{fill_id}",
        trade_id=uuid.uuid4(),
        proposal_id=uuid.uuid4(),
        account_id=account,
        symbol=sym,
        side=side,
        quantity=Decimal(100),
        price=Decimal(price),
        executed_at=datetime(on.year, on.month, on.day, 15, 0, tzinfo=UTC),
    )
    async with unit_of_work(db, "taxlot-svc") as uow:
        await on_fills_received(uow, [delivery(fill, tenant="acme")])


async def book_of_a_world(db: Database) -> tuple[dict[str, str], str]:
    """A seller of a loss, a buyer of the same security 17 days later (separate households
    so far), an account with a lot, and one without a ledger: role -> account id."""
    sym = "S" + uuid.uuid4().hex[:8].upper()
    ids = {role: uid(role[0].upper()) for role in ROLES}
    await open_book(db, ids["seller"], [(sym, "100", "1000.00", "2024-01-10")])
    await open_book(db, ids["buyer"], [])
    await open_book(db, ids["mover"], [(sym, "5", "60.00", "2023-03-01")])
    await trade(db, ids["seller"], sym, "sell", "7.50", date(2024, 6, 3))
    await trade(db, ids["buyer"], sym, "buy", "8", date(2024, 6, 20))
    return ids, sym


def changes_of_a_world(ids: dict[str, str]) -> list[AccountChangedV1]:
    """The events, in message order: the fourth is bad (an account id with a space)."""
    households = {h: uid(h) for h in ("H1", "H2", "H3")}

    def changed(
        account: str, household: str, kind: str = "taxable", method: str | None = None
    ) -> AccountChangedV1:
        return AccountChangedV1(
            account_id=account,
            household_id=households.get(household, household),
            name=account,
            account_type=kind,
            model_id=None,
            status="active",
            auto_approve=True,
            tax_settings=TaxSettingsV1(relief_method=method) if method else None,
        )

    return [
        changed(ids["seller"], "H1", method="hifo"),
        changed(ids["mover"], "H2"),
        changed(ids["fresh"], "H2", "ira"),
        changed(f"{ids['mover']} bad", "H2"),
        changed(ids["buyer"], "H1"),  # joins the seller: the loss is washed
        changed(ids["mover"], "H3"),
        changed(ids["mover"], "H3", method="lifo"),  # no move: only its settings change
        changed(ids["fresh"], "H3"),
        changed(ids["seller"], "H1", method="fifo"),
    ]


async def state_of_a_world(db: Database, ids: dict[str, str], sym: str) -> dict[str, Any]:
    """What the events left, with this world's ids replaced by roles."""
    names = {v: k for k, v in ids.items()}

    def plain(value: Any) -> Any:
        value = str(value)
        for account, role in names.items():
            value = value.replace(account, role)
        return value.replace(sym, "SYM")

    accounts = list(ids.values())
    async with db.sessions() as s:
        facts = await facts_of(s, accounts)
        households = {f.household for f in facts.values()}
        infos = (
            await s.execute(
                text("SELECT account_id, tenant FROM accounts WHERE account_id = ANY(:ids)"),
                {"ids": accounts},
            )
        ).all()
        settings = {a: await repo.get_tax_settings(s, a) for a in accounts}
        lots = await repo.lots_of_accounts(s, accounts)
        gains = await repo.realized_gains(s, ids["seller"], None)
        ledger = {a: await repo.ledger_entries(s, a) for a in accounts}
        snapshots = (
            await s.execute(
                text(
                    "SELECT account_id, cause FROM pending_snapshots"
                    " WHERE account_id = ANY(:ids) ORDER BY 1"
                ),
                {"ids": accounts},
            )
        ).all()
    household_roles = {h: f"household{n}" for n, h in enumerate(sorted(households, key=plain))}
    return {
        "facts": {
            names[a]: (household_roles[f.household], f.account_type) for a, f in facts.items()
        },
        "same_household": sorted(
            sorted(names[a] for a, f in facts.items() if f.household == h) for h in households
        ),
        "tenants": sorted((names[a], t) for a, t in infos),
        "settings": {names[a]: r.method if r else None for a, r in settings.items()},
        "lots": sorted(
            (names[x.account_id], plain(x.lot_id), x.quantity, x.cost_basis, x.wash_adjustment)
            for x in lots
        ),
        "gains": [
            (g.quantity, g.proceeds, g.cost_basis, g.gain, g.adjustment, g.washed_quantity)
            for g in gains
        ],
        "ledger": {
            names[a]: [(e.cause, e.kind, e.quantity, e.amount) for e in entries]
            for a, entries in ledger.items()
        },
        "snapshots": sorted((names[a], cause) for a, cause in snapshots),
    }


async def test_a_batch_of_account_changed_leaves_what_one_at_a_time_leaves(
    taxlot_db: Database,
) -> None:
    one_by_one, sym_one = await book_of_a_world(taxlot_db)
    batched, sym_batch = await book_of_a_world(taxlot_db)
    # the snapshots the opening and fills asked for are not this test's
    async with taxlot_db.sessions() as s, s.begin():
        await s.execute(
            text("DELETE FROM pending_snapshots WHERE account_id = ANY(:ids)"),
            {"ids": [*one_by_one.values(), *batched.values()]},
        )

    refused = []
    for payload in changes_of_a_world(one_by_one):
        try:
            async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
                await taxes.account_changed(uow, payload, "acme")
        except PermanentMessageError as exc:
            refused.append(str(exc))
    assert len(refused) == 1 and "bad" in refused[0]

    processor = BatchProcessor(
        f"taxlot-account-batch-{uuid.uuid4().hex[:8]}",
        [Subscription.batch("account-changed", on_account_changed)],
        lambda: unit_of_work(taxlot_db, "taxlot-svc"),
    )
    records = [
        consumer_record(envelope(p, tenant="acme"), n)
        for n, p in enumerate(changes_of_a_world(batched))
    ]
    outcomes = await processor.process(records)
    assert outcomes == {"processed": 8, "duplicate": 0, "dead_lettered": 1}

    expected = await state_of_a_world(taxlot_db, one_by_one, sym_one)
    got = await state_of_a_world(taxlot_db, batched, sym_batch)
    assert got == expected
    # and what that is: the buyer joined the seller (the loss washed into its lot), the
    # mover and the account without a ledger ended where their last event put them
    assert got["same_household"] == [["buyer", "seller"], ["fresh", "mover"]]
    assert got["facts"]["buyer"][1] == "taxable" and got["facts"]["fresh"][1] == "taxable"
    assert got["settings"] == {"seller": "fifo", "buyer": "fifo", "mover": "lifo", "fresh": "fifo"}
    assert got["tenants"] == [(r, "acme") for r in sorted(ROLES)]
    assert [lot[2:] for lot in got["lots"] if lot[0] == "buyer"] == [
        (Decimal(100), Decimal("1050.00"), Decimal("250.00"))
    ]
    assert ("buyer", "household-change") in got["snapshots"]
    assert any(kind == "restate" for _, kind, _, _ in got["ledger"]["buyer"])


async def test_a_batch_applies_the_same_account_named_many_times_in_message_order(
    taxlot_db: Database,
) -> None:
    account = uid("R")
    await open_book(taxlot_db, account, [("VTI", "3", "300.00", "2024-01-02")])
    households = [uid("H") for _ in range(3)]
    events = [
        AccountChangedV1(
            account_id=account,
            household_id=households[n % 3],
            name=account,
            account_type="ira" if n % 2 else "taxable",
            model_id=None,
            status="active",
            auto_approve=True,
            tax_settings=TaxSettingsV1(relief_method=("fifo", "lifo", "hifo")[n % 3]),
        )
        for n in range(7)
    ]
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        await on_account_changed(uow, [delivery(e, key=account, tenant="acme") for e in events])
    async with taxlot_db.sessions() as s:
        facts = (await facts_of(s, [account]))[account]
        settings = await repo.get_tax_settings(s, account)
        lots = await repo.lots_of_accounts(s, [account])
    last = events[-1]
    assert (facts.household, facts.account_type) == (last.household_id, last.account_type)
    assert settings.method == "fifo"
    assert [(x.quantity, x.cost_basis) for x in lots] == [(Decimal(3), Decimal("300.00"))]
