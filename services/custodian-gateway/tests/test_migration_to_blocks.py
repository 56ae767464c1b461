"""The upgrade to block orders on a database holding orders of the previous version (one per
trade): each becomes a block of one allocation that keeps its client order id and account,
so a resend has the same terms; an order still partially filled stops the upgrade."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from alembic import command
from ballast_common.migrations import alembic_config
from custodian_gateway.main import spec
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

pytestmark = pytest.mark.integration

BEFORE = "f13394d71647"  # the last revision of one order per trade
SCHEMA = "custodian_gateway_upgrade_test"


def _migrate(connection: Connection, revision: str) -> None:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
    connection.execute(text(f'SET LOCAL search_path TO "{SCHEMA}"'))
    config = alembic_config(SCHEMA, spec.migrations_dir, spec.metadata)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    connection.execute(text(f'SET LOCAL search_path TO "{SCHEMA}"'))
    config = alembic_config(SCHEMA, spec.migrations_dir, spec.metadata)
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
        await conn.run_sync(_migrate, BEFORE)
    yield engine
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
    await engine.dispose()


async def _legacy_order(engine: AsyncEngine, status: str, **values: Any) -> dict[str, Any]:
    row = {
        "client_order_id": f"BAL-{uuid.uuid4().hex}",
        "trade_id": uuid.uuid4(),
        "proposal_id": uuid.uuid4(),
        "account_id": "ACC-1",
        "tenant": "acme",
        "symbol": "MSFT",
        "side": "buy",
        "quantity": Decimal(10),
        "reference_price": Decimal("415.2"),
        "status": status,
        "filled_quantity": Decimal(0),
        "filled_notional": Decimal(0),
        "average_price": None,
        "reject_reason": None,
        "times_sent": 0 if status == "new" else 1,
        "lot_ids": ["L-1"],
        "sleeve_id": "core",
    } | values
    async with engine.begin() as conn:
        await conn.execute(text(f'SET LOCAL search_path TO "{SCHEMA}"'))
        await conn.execute(
            text(
                "INSERT INTO orders (client_order_id, trade_id, proposal_id, account_id, tenant, "
                "symbol, side, quantity, reference_price, status, filled_quantity, "
                "filled_notional, average_price, reject_reason, times_sent, lot_ids, sleeve_id, "
                "created_at, updated_at) VALUES (:client_order_id, :trade_id, :proposal_id, "
                ":account_id, :tenant, :symbol, :side, :quantity, :reference_price, :status, "
                ":filled_quantity, :filled_notional, :average_price, :reject_reason, "
                ":times_sent, :lot_ids, :sleeve_id, now(), now())"
            ),
            row,
        )
    return row


async def _rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.begin() as conn:
        await conn.execute(text(f'SET LOCAL search_path TO "{SCHEMA}"'))
        return list((await conn.execute(text(sql))).mappings())


async def test_orders_of_one_trade_become_blocks_of_one_allocation(engine: AsyncEngine) -> None:
    new = await _legacy_order(engine, "new")
    sent = await _legacy_order(engine, "sent", account_id="ACC-2", quantity=Decimal("2.5"))
    filled = await _legacy_order(
        engine,
        "filled",
        filled_quantity=Decimal(10),
        filled_notional=Decimal(1000),
        average_price=Decimal(100),
    )
    rejected = await _legacy_order(
        engine,
        "rejected",
        filled_quantity=Decimal(4),
        filled_notional=Decimal(400),
        average_price=Decimal(100),
        reject_reason="halted",
    )
    async with engine.begin() as conn:
        await conn.execute(text(f'SET LOCAL search_path TO "{SCHEMA}"'))
        await conn.execute(text("INSERT INTO poll_cursor VALUES ('custodian', 17, now())"))
        await conn.run_sync(_migrate, "head")

    allocations = {r["trade_id"]: r for r in await _rows(engine, "SELECT * FROM allocations")}
    orders = {r["client_order_id"]: r for r in await _rows(engine, "SELECT * FROM orders")}
    expected = {
        new["trade_id"]: (new, "blocked", "new"),
        sent["trade_id"]: (sent, "blocked", "sent"),
        filled["trade_id"]: (filled, "filled", "filled"),
        rejected["trade_id"]: (rejected, "partially_filled", "rejected"),
    }
    assert set(allocations) == set(expected)
    for trade_id, (legacy, allocation_status, order_status) in expected.items():
        allocation = allocations[trade_id]
        order = orders[legacy["client_order_id"]]
        assert allocation["client_order_id"] == legacy["client_order_id"]
        assert (allocation["status"], order["status"]) == (allocation_status, order_status)
        assert allocation["account_id"] == order["account_id"] == legacy["account_id"]
        assert (allocation["quantity"], order["quantity"]) == (legacy["quantity"],) * 2
        assert allocation["filled_quantity"] == legacy["filled_quantity"]
        assert (allocation["lot_ids"], allocation["sleeve_id"]) == (["L-1"], "core")
        assert (order["custodian"], order["allocation_count"]) == ("default", 1)
        assert order["whole_shares"] is (legacy["quantity"] == 10)
        assert (order["allocated_at"] is not None) is (order_status in ("filled", "rejected"))
    assert allocations[rejected["trade_id"]]["reject_reason"] == "halted"
    assert await _rows(engine, "SELECT name, last_seq FROM poll_cursor") == [
        {"name": "default", "last_seq": 17}
    ]

    # and back: blocks of one trade are orders of one trade again
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade, BEFORE)
    back = {r["client_order_id"]: r for r in await _rows(engine, "SELECT * FROM orders")}
    assert {o["trade_id"] for o in back.values()} == set(expected)
    assert back[sent["client_order_id"]]["account_id"] == "ACC-2"


async def test_an_order_still_partially_filled_stops_the_upgrade(engine: AsyncEngine) -> None:
    await _legacy_order(
        engine, "partially_filled", filled_quantity=Decimal(3), filled_notional=Decimal(300)
    )
    with pytest.raises(RuntimeError, match="1 orders are partially filled"):
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "head")
    (order,) = await _rows(engine, "SELECT status FROM orders")
    assert order["status"] == "partially_filled"  # nothing changed
