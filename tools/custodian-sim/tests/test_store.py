"""The simulator's book survives a restart: a second app on the same store file (what a
restarted process opens) goes on where the first stopped."""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from custodian_sim.book import OrderBook, OrderConflictError, OrderRequest
from custodian_sim.main import create_app
from custodian_sim.settings import SimSettings
from custodian_sim.store import BookStore

from .conftest import FakeClock, SimFactory, all_executions, order

SPLIT = {"partial_fill_probability": 1.0, "max_fills": 3, "latency_ms": 100}


async def test_a_restart_forgets_no_order_and_continues_the_sequence_without_gaps(
    sim: SimFactory, clock: FakeClock, tmp_path: Path
) -> None:
    store = str(tmp_path / "restart" / "book.sqlite3")
    orders = [order(f"o{i}", quantity="90") for i in range(12)]
    async with sim(store_path=store, **SPLIT) as c:
        assert (await c.post("/orders", json={"orders": orders})).status_code == 202
        clock.advance(100)  # the first piece of every order is due, the others are not
        before = await all_executions(c)
        stats_before = (await c.get("/stats")).json()
    assert [e["seq"] for e in before] == list(range(1, 13))
    assert stats_before["pending_executions"] > 0

    async with sim(store_path=store, **SPLIT) as c:  # the restarted process
        assert await all_executions(c) == before  # the same executions, the same numbers
        assert (await c.get("/stats")).json() == stats_before
        resent = await c.post("/orders", json={"orders": orders[:3]})
        assert resent.json() == {"accepted": [], "duplicates": ["o0", "o1", "o2"]}
        clock.advance(10_000)
        after = await all_executions(c)
        stats = (await c.get("/stats")).json()
        statuses = {(await c.get(f"/orders/o{i}")).json()["status"] for i in range(12)}

    assert after[: len(before)] == before
    assert [e["seq"] for e in after] == list(range(1, len(after) + 1))
    ids = [e["execution_id"] for e in after]
    assert len(ids) == len(set(ids))  # nothing released twice under a new number
    filled: Counter[str] = Counter()
    for e in after:
        filled[e["client_order_id"]] += Decimal(e["quantity"])
    assert filled == {f"o{i}": Decimal(90) for i in range(12)}
    assert statuses == {"filled"}
    assert stats["pending_executions"] == 0
    assert stats["orders_received"] == 12 and stats["duplicate_submissions"] == 3
    assert stats["orders_by_times_submitted"] == {"1": 9, "2": 3}


async def test_executions_due_while_the_simulator_was_down_come_out_in_due_order(
    sim: SimFactory, clock: FakeClock, tmp_path: Path
) -> None:
    store = str(tmp_path / "down" / "book.sqlite3")
    async with sim(store_path=store, latency_jitter_ms=500, partial_fill_probability=0.5) as c:
        await c.post("/orders", json={"orders": [order(f"o{i}") for i in range(20)]})
    clock.advance(60_000)  # down for a minute
    async with sim(store_path=store, latency_jitter_ms=500, partial_fill_probability=0.5) as c:
        executions = await all_executions(c)
    times = [e["executed_at"] for e in executions]
    assert times == sorted(times)
    assert [e["seq"] for e in executions] == list(range(1, len(executions) + 1))
    assert {e["client_order_id"] for e in executions} == {f"o{i}" for i in range(20)}


async def test_a_known_order_stays_known_after_a_restart_with_its_terms(
    sim: SimFactory, tmp_path: Path
) -> None:
    store = str(tmp_path / "terms" / "book.sqlite3")
    async with sim(store_path=store) as c:
        await c.post("/orders", json={"orders": [order("o1", quantity="10")]})
    async with sim(store_path=store) as c:
        conflict = await c.post("/orders", json={"orders": [order("o1", quantity="11")]})
        assert conflict.status_code == 409
        assert "quantity" in {e["field"] for e in conflict.json()["errors"]}
        again = await c.post("/orders", json={"orders": [order("o1", quantity="10")]})
        assert again.json() == {"accepted": [], "duplicates": ["o1"]}
        assert (await c.get("/orders/o1")).json()["times_submitted"] == 2


async def test_possible_resends_are_recorded_on_new_and_known_orders(
    sim: SimFactory, clock: FakeClock
) -> None:
    async with sim(partial_fill_probability=0) as c:
        await c.post("/orders", json={"orders": [order("known")]})
        resp = await c.post(
            "/orders",
            json={
                "orders": [
                    order("known") | {"possible_resend": True},
                    order("lost") | {"possible_resend": True},
                ]
            },
        )
        assert resp.json() == {"accepted": ["lost"], "duplicates": ["known"]}
        clock.advance(1000)
        known = (await c.get("/orders/known")).json()
        lost = (await c.get("/orders/lost")).json()
        stats = (await c.get("/stats")).json()
        executions = await all_executions(c)
    assert (known["times_submitted"], known["possible_resends"]) == (2, 1)
    assert (lost["times_submitted"], lost["possible_resends"], lost["status"]) == (1, 1, "filled")
    assert stats["possible_resends"] == 2 and stats["duplicate_submissions"] == 1
    assert Counter(e["client_order_id"] for e in executions) == {"known": 1, "lost": 1}


async def test_possible_resend_must_be_a_boolean(sim: SimFactory) -> None:
    async with sim() as c:
        resp = await c.post("/orders", json={"orders": [order("o1") | {"possible_resend": "yes"}]})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "orders[0].possible_resend"


async def test_reset_clears_the_store_file(
    sim: SimFactory, clock: FakeClock, tmp_path: Path
) -> None:
    store = str(tmp_path / "reset" / "book.sqlite3")
    async with sim(store_path=store) as c:
        await c.post("/orders", json={"orders": [order("o1"), order("o2")]})
        clock.advance(1000)
        assert len(await all_executions(c)) >= 2
        assert (await c.post("/reset")).status_code == 200
    async with sim(store_path=store) as c:
        assert (await c.get("/orders/o1")).status_code == 404
        stats = (await c.get("/stats")).json()
        assert (stats["orders_received"], stats["last_seq"]) == (0, 0)


def test_a_refused_submission_leaves_nothing_in_the_store(tmp_path: Path) -> None:
    settings = SimSettings(store_path=str(tmp_path / "book.sqlite3"))
    book = OrderBook(settings)

    def request(coid: str, quantity: str) -> OrderRequest:
        return OrderRequest(coid, "acct-1", "AAPL", "buy", Decimal(quantity), Decimal("10"))

    book.submit([request("a", "1")])
    with pytest.raises(OrderConflictError):
        book.submit([request("b", "1"), request("a", "2")])
    book.close()
    reopened = OrderBook(settings)
    assert reopened.get_order("b") is None
    stats = reopened.stats()
    assert (stats["orders_received"], stats["duplicate_submissions"]) == (1, 0)
    reopened.close()


def test_the_store_is_a_wal_file_under_the_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALLAST_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("SIM_STORE_PATH", raising=False)
    settings = SimSettings()
    assert settings.store_path == str(tmp_path / "state" / "custodian-sim" / "book.sqlite3")
    book = OrderBook(settings)
    assert not Path(settings.store_path).exists()  # nothing is opened until it is used
    assert book.stats()["orders_received"] == 0
    with sqlite3.connect(settings.store_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    book.close()
    monkeypatch.setenv("SIM_STORE_PATH", str(tmp_path / "elsewhere.sqlite3"))
    assert SimSettings().store_path == str(tmp_path / "elsewhere.sqlite3")


def test_a_store_of_a_newer_simulator_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        BookStore(path).stats()


def test_in_memory_store_for_unit_tests(clock: FakeClock) -> None:
    book = OrderBook(SimSettings(store_path=":memory:", partial_fill_probability=0), clock)

    book.submit([OrderRequest("m1", "acct", "AAPL", "sell", Decimal(3), Decimal("5.5"))])
    clock.advance(1000)
    page, last = book.executions_after(0, 10)
    assert last == 1 and [e.execution_id for e in page] == ["m1-x1"]
    order_now: Any = book.get_order("m1")
    assert order_now.status == "filled"


async def test_the_server_start_opens_the_store_and_says_what_it_found(
    sim: SimFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = str(tmp_path / "start" / "book.sqlite3")
    async with sim(store_path=store, latency_ms=1000, partial_fill_probability=0) as c:
        await c.post("/orders", json={"orders": [order("o1"), order("o2")]})
    app = create_app(SimSettings(store_path=store, latency_ms=1000))
    with caplog.at_level(logging.INFO, logger="custodian_sim"):
        async with app.router.lifespan_context(app):  # what the server runs on start
            pass
    (opened,) = [r for r in caplog.records if r.getMessage() == "book opened"]
    assert (opened.orders, opened.pending_executions, opened.store) == (2, 2, store)  # type: ignore[attr-defined]


def test_a_version_2_file_gets_the_columns_and_tables_of_version_3(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    BookStore(path).stats()  # made at the current version, then taken back to version 2
    db = sqlite3.connect(path)
    db.executescript(
        "ALTER TABLE orders DROP COLUMN channel;"
        "ALTER TABLE planned_executions DROP COLUMN cancel_id;"
        "ALTER TABLE accounts DROP COLUMN account_type;"
        "DROP TABLE fix_reported; DROP TABLE wash_adjustments; DROP TABLE open_losses;"
        "INSERT INTO orders (client_order_id, account_id, symbol, side, quantity, "
        "reference_price, received_at_us) VALUES ('old', 'a', 'AAPL', 'buy', '1', '10', 0);"
        "PRAGMA user_version = 2;"
    )
    db.close()
    store = BookStore(path)
    found = store.order_with_executions("old")
    assert found is not None and found[0].channel == "http"
    assert store.fix_reported_seq() == 0
    assert store.known_accounts(["a"]) == {}
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    db.close()
