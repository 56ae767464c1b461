from __future__ import annotations

import io
import json
import logging
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from custodian_sim.logs import JsonFormatter

from .conftest import FakeClock, SimFactory, all_executions, order

PROBLEM = "application/problem+json"


async def test_fill_appears_only_after_latency(sim: SimFactory, clock: FakeClock) -> None:
    async with sim(latency_ms=50, partial_fill_probability=0) as c:
        resp = await c.post("/orders", json={"orders": [order("o1", price="187.425")]})
        assert resp.status_code == 202
        assert resp.json() == {"accepted": ["o1"], "duplicates": []}

        assert await all_executions(c) == []
        clock.advance(49.9)
        assert await all_executions(c) == []
        assert (await c.get("/orders/o1")).json()["status"] == "accepted"

        clock.advance(0.1)
        [fill] = await all_executions(c)
        assert fill["seq"] == 1
        assert fill["kind"] == "fill"
        assert fill["quantity"] == "10"
        assert fill["price"] == "187.43"  # rounded to cents, half up
        assert fill["reason"] is None
        assert datetime.fromisoformat(fill["executed_at"]) <= clock.now

        o = (await c.get("/orders/o1")).json()
        assert o["status"] == "filled"
        assert o["filled_quantity"] == "10"
        assert o["times_submitted"] == 1


async def test_resubmitted_order_is_not_executed_again(sim: SimFactory, clock: FakeClock) -> None:
    async with sim(partial_fill_probability=0) as c:
        first = await c.post("/orders", json={"orders": [order("o1"), order("o2")]})
        assert first.json() == {"accepted": ["o1", "o2"], "duplicates": []}
        again = await c.post("/orders", json={"orders": [order("o1"), order("o3")]})
        assert again.status_code == 202
        assert again.json() == {"accepted": ["o3"], "duplicates": ["o1"]}
        # a duplicate inside one batch is a duplicate too
        batch = await c.post("/orders", json={"orders": [order("o4"), order("o4"), order("o1")]})
        assert batch.json() == {"accepted": ["o4"], "duplicates": ["o4", "o1"]}

        clock.advance(1000)
        execs = await all_executions(c)
        per_order = defaultdict(list)
        for e in execs:
            per_order[e["client_order_id"]].append(e)
        assert sorted(per_order) == ["o1", "o2", "o3", "o4"]
        assert all(len(v) == 1 for v in per_order.values())

        assert (await c.get("/orders/o1")).json()["times_submitted"] == 3
        stats = (await c.get("/stats")).json()
        assert stats["orders_received"] == 4
        assert stats["duplicate_submissions"] == 3
        assert stats["fills"] == 4
        assert stats["rejects"] == 0
        assert stats["orders_by_times_submitted"] == {"1": 2, "2": 1, "3": 1}


async def test_reused_id_with_other_terms_is_a_conflict_and_nothing_is_accepted(
    sim: SimFactory,
) -> None:
    async with sim() as c:
        await c.post("/orders", json={"orders": [order("o1", quantity="10")]})
        resp = await c.post(
            "/orders", json={"orders": [order("new"), order("o1", quantity="11", side="sell")]}
        )
        assert resp.status_code == 409
        assert resp.headers["content-type"] == PROBLEM
        fields = {e["field"] for e in resp.json()["errors"]}
        assert {"client_order_id", "quantity", "side"} <= fields
        assert (await c.get("/orders/new")).status_code == 404
        assert (await c.get("/orders/o1")).json()["times_submitted"] == 1


@pytest.mark.parametrize(
    ("max_fills", "quantity"),
    [(3, "100"), (3, "2"), (3, "1"), (3, "12.5"), (2, "0.003"), (3, "1000000")],
)
async def test_partial_fills_sum_exactly_to_the_order(
    sim: SimFactory, clock: FakeClock, max_fills: int, quantity: str
) -> None:
    async with sim(partial_fill_probability=1.0, max_fills=max_fills) as c:
        orders = [order(f"o{i}", quantity=quantity) for i in range(40)]
        assert (await c.post("/orders", json={"orders": orders})).status_code == 202
        clock.advance(10_000)
        execs = await all_executions(c)
        pieces: dict[str, list[Decimal]] = defaultdict(list)
        for e in execs:
            assert e["kind"] == "fill"
            pieces[e["client_order_id"]].append(Decimal(e["quantity"]))
        assert len(pieces) == 40
        q = Decimal(quantity)
        whole = q == q.to_integral_value()
        for parts in pieces.values():
            assert sum(parts) == q
            assert 1 <= len(parts) <= max_fills
            assert all(p > 0 for p in parts)
            if whole:
                assert all(p == p.to_integral_value() for p in parts)
        if q == 1:  # one whole share cannot be split
            assert all(len(p) == 1 for p in pieces.values())
        else:
            assert any(len(p) > 1 for p in pieces.values())
        statuses = {(await c.get(f"/orders/{k}")).json()["status"] for k in pieces}
        assert statuses == {"filled"}


async def test_the_rest_of_a_partially_filled_order_can_be_cancelled(
    sim: SimFactory, clock: FakeClock
) -> None:
    async with sim(partial_fill_probability=1.0, max_fills=4, cancel_rest_probability=1.0) as c:
        orders = [order(f"o{i}", quantity="100") for i in range(20)]
        assert (await c.post("/orders", json={"orders": orders})).status_code == 202
        clock.advance(10_000)
        by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in await all_executions(c):
            by_order[e["client_order_id"]].append(e)
        for cid, execs in by_order.items():
            *fills, last = execs
            assert fills and all(e["kind"] == "fill" for e in fills)
            assert last["kind"] == "reject" and "rest of the order cancelled" in last["reason"]
            filled = sum(Decimal(e["quantity"]) for e in fills)
            assert Decimal(last["quantity"]) == 100 - filled > 0
            o = (await c.get(f"/orders/{cid}")).json()
            assert (o["status"], Decimal(o["filled_quantity"])) == ("rejected", filled)


async def test_partially_filled_status_between_pieces(sim: SimFactory, clock: FakeClock) -> None:
    async with sim(partial_fill_probability=1.0, max_fills=3, latency_ms=100) as c:
        await c.post("/orders", json={"orders": [order("o1", quantity="300")]})
        clock.advance(100)
        [first] = await all_executions(c)
        o = (await c.get("/orders/o1")).json()
        assert o["status"] == "partially_filled"
        assert o["filled_quantity"] == first["quantity"]
        clock.advance(1000)
        assert (await c.get("/orders/o1")).json()["status"] == "filled"


async def test_reject_symbols_and_reject_probability(sim: SimFactory, clock: FakeClock) -> None:
    async with sim(reject_symbols="gme, BAD.X", partial_fill_probability=0) as c:
        orders = [order("a", symbol="GME"), order("b", symbol="bad.x"), order("c", symbol="MSFT")]
        await c.post("/orders", json={"orders": orders})
        clock.advance(100)
        by_id = {e["client_order_id"]: e for e in await all_executions(c)}
        for coid, sym in (("a", "GME"), ("b", "bad.x")):
            assert by_id[coid]["kind"] == "reject"
            assert sym in by_id[coid]["reason"]
            assert by_id[coid]["price"] is None
            assert by_id[coid]["quantity"] == "10"
            o = (await c.get(f"/orders/{coid}")).json()
            assert o["status"] == "rejected"
            assert o["filled_quantity"] == "0"
            assert o["reject_reason"] == by_id[coid]["reason"]
        assert by_id["c"]["kind"] == "fill"
        assert (await c.get("/stats")).json()["rejects"] == 2

    async with sim(reject_probability=1.0) as c:
        await c.post("/orders", json={"orders": [order(f"r{i}") for i in range(20)]})
        clock.advance(100)
        execs = await all_executions(c)
        assert len(execs) == 20
        assert {e["kind"] for e in execs} == {"reject"}
        assert all(e["reason"] for e in execs)

    async with sim(reject_probability=0.5, partial_fill_probability=0) as c:
        await c.post("/orders", json={"orders": [order(f"h{i}") for i in range(200)]})
        clock.advance(100)
        kinds = [e["kind"] for e in await all_executions(c)]
        assert 50 < kinds.count("reject") < 150


@pytest.mark.parametrize(
    ("side", "price", "bps", "expected"),
    [
        ("buy", "100.00", "25", "100.25"),
        ("sell", "100.00", "25", "99.75"),
        ("buy", "33.333", "0", "33.33"),
        ("sell", "10.005", "0", "10.01"),
        ("buy", "50", "1.5", "50.01"),
    ],
)
async def test_slippage_is_adverse_and_rounded_to_cents(
    sim: SimFactory, clock: FakeClock, side: str, price: str, bps: str, expected: str
) -> None:
    async with sim(slippage_bps=bps, partial_fill_probability=0) as c:
        await c.post("/orders", json={"orders": [order("o1", side=side, price=price)]})
        clock.advance(100)
        [fill] = await all_executions(c)
        assert fill["price"] == expected


async def test_cursor_paging_is_gap_free(sim: SimFactory, clock: FakeClock) -> None:
    async with sim(partial_fill_probability=0.5, latency_jitter_ms=40) as c:
        await c.post("/orders", json={"orders": [order(f"o{i}", quantity="7") for i in range(30)]})
        clock.advance(30)
        assert (await c.get("/executions")).json() == {"executions": [], "last_seq": 0}

        seen: list[dict[str, Any]] = []
        cursor = 0
        for _ in range(60):  # step time forward while paging, as the gateway would
            clock.advance(7)
            resp = await c.get("/executions", params={"after": cursor, "limit": 7})
            page = resp.json()
            assert len(page["executions"]) <= 7
            if page["executions"]:
                assert page["last_seq"] == page["executions"][-1]["seq"]
            else:
                assert page["last_seq"] == cursor
            for e in page["executions"]:
                assert datetime.fromisoformat(e["executed_at"]) <= clock.now
            seen.extend(page["executions"])
            cursor = page["last_seq"]
        seqs = [e["seq"] for e in seen]
        assert seqs == list(range(1, len(seen) + 1))
        total = (await c.get("/stats")).json()
        assert total["pending_executions"] == 0
        assert total["last_seq"] == len(seen)
        filled: dict[str, Decimal] = defaultdict(Decimal)
        for e in seen:
            filled[e["client_order_id"]] += Decimal(e["quantity"])
        assert filled == {f"o{i}": Decimal(7) for i in range(30)}
        times = [datetime.fromisoformat(e["executed_at"]) for e in seen]
        assert times == sorted(times)

        # asking from the middle returns the tail; past the end returns nothing
        tail = (await c.get("/executions", params={"after": 5, "limit": 3})).json()
        assert [e["seq"] for e in tail["executions"]] == [6, 7, 8]
        end = (await c.get("/executions", params={"after": len(seen) + 10})).json()
        assert end == {"executions": [], "last_seq": len(seen) + 10}


async def test_same_seed_same_fate_whatever_the_arrival_order(
    sim: SimFactory, clock: FakeClock
) -> None:
    orders = [order(f"o{i}", quantity="90") for i in range(40)]

    async def fates(seed: int, batch: list[dict[str, str]]) -> dict[str, list[tuple[str, str]]]:
        async with sim(seed=seed, partial_fill_probability=0.5, reject_probability=0.1) as c:
            await c.post("/orders", json={"orders": batch})
            clock.advance(10_000)
            out: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for e in await all_executions(c):
                out[e["client_order_id"]].append((e["kind"], e["quantity"]))
            return dict(out)

    a = await fates(7, orders)
    assert a == await fates(7, list(reversed(orders)))
    assert a != await fates(8, orders)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"quantity": "0"}, "orders[0].quantity"),
        ({"quantity": "-3"}, "orders[0].quantity"),
        ({"quantity": "ten"}, "orders[0].quantity"),
        ({"quantity": "NaN"}, "orders[0].quantity"),
        ({"quantity": 1.5}, "orders[0].quantity"),
        ({"quantity": "1.123456789"}, "orders[0].quantity"),
        ({"quantity": "1e13"}, "orders[0].quantity"),
        ({"reference_price": "0"}, "orders[0].reference_price"),
        ({"reference_price": 10.1}, "orders[0].reference_price"),
        ({"side": "hold"}, "orders[0].side"),
        ({"client_order_id": ""}, "orders[0].client_order_id"),
        ({"symbol": None}, "orders[0].symbol"),
    ],
)
async def test_invalid_order_is_422_problem_naming_the_field(
    sim: SimFactory, patch: dict[str, Any], field: str
) -> None:
    bad = {**order("bad"), **patch}
    bad = {k: v for k, v in bad.items() if v is not None}
    async with sim() as c:
        resp = await c.post("/orders", json={"orders": [bad, order("good")]})
        assert resp.status_code == 422
        assert resp.headers["content-type"] == PROBLEM
        body = resp.json()
        assert body["title"] and field in body["detail"]
        assert [e["field"] for e in body["errors"]] == [field]
        # nothing of a rejected request is accepted
        assert (await c.get("/orders/good")).status_code == 404
        assert (await c.get("/stats")).json()["orders_received"] == 0


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"orders": []}', "orders"),
        (b"{}", "orders"),
        (b"not json", "body"),
    ],
)
async def test_malformed_body_is_422(sim: SimFactory, content: bytes, field: str) -> None:
    async with sim() as c:
        resp = await c.post(
            "/orders", content=content, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 422
        assert resp.headers["content-type"] == PROBLEM
        assert resp.json()["errors"][0]["field"].startswith(field)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 5001}, "limit"), ({"after": -1}, "after")],
)
async def test_bad_cursor_query_is_422(sim: SimFactory, params: dict[str, int], field: str) -> None:
    async with sim() as c:
        resp = await c.get("/executions", params=params)
        assert resp.status_code == 422
        assert resp.headers["content-type"] == PROBLEM
        assert resp.json()["errors"][0]["field"] == field


async def test_unknown_order_is_404_problem(sim: SimFactory) -> None:
    async with sim() as c:
        resp = await c.get("/orders/nope")
        assert resp.status_code == 404
        assert resp.headers["content-type"] == PROBLEM
        assert "nope" in resp.json()["detail"]


async def test_reset_clears_everything(sim: SimFactory, clock: FakeClock) -> None:
    async with sim() as c:
        await c.post("/orders", json={"orders": [order("o1")]})
        await c.post("/orders", json={"orders": [order("o1")]})
        clock.advance(1000)
        assert await all_executions(c)
        assert (await c.post("/reset")).status_code == 200
        assert await all_executions(c) == []
        assert (await c.get("/orders/o1")).status_code == 404
        stats = (await c.get("/stats")).json()
        assert stats["orders_received"] == stats["duplicate_submissions"] == 0
        # after a reset the id is new again and sequence numbers restart
        await c.post("/orders", json={"orders": [order("o1")]})
        clock.advance(1000)
        assert [e["seq"] for e in await all_executions(c)] == [1]


async def test_health(sim: SimFactory) -> None:
    async with sim() as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).status_code == 200


async def test_traceparent_is_logged_as_json(sim: SimFactory) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("custodian_sim")
    logger.addHandler(handler)
    try:
        async with sim() as c:
            tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            await c.post("/orders", json={"orders": [order("o1")]}, headers={"traceparent": tp})
            await c.post("/orders", json={"orders": [order("o2")]}, headers={"traceparent": "junk"})
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    traced = [x for x in lines if x.get("trace_id") == "4bf92f3577b34da6a3ce929d0e0e4736"]
    assert {x["msg"] for x in traced} == {"orders submitted", "request served"}
    assert all(x["parent_span_id"] == "00f067aa0ba902b7" for x in traced)
    served = [x for x in lines if x["msg"] == "request served"]
    assert len(served) == 2
    assert "trace_id" not in served[1]
    assert served[0]["status"] == 202 and served[0]["path"] == "/orders"
