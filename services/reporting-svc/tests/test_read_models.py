"""reporting-svc's handlers against real Postgres, fed real envelopes built from the
contract payloads, and the REST reports over what they stored."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.contracts import events as ev
from ballast_common.db import Database
from ballast_common.testing import envelope, example
from reporting_events import (
    approved,
    at,
    chunk_done,
    declined,
    deliver,
    drift,
    fill,
    holdings,
    new_account,
    new_model,
    proposed,
    setup_book,
    trade,
)
from reporting_svc import repository as repo
from sqlalchemy import text

pytestmark = pytest.mark.integration


async def positions(db: Database, account: str) -> dict[str, Decimal]:
    async with db.sessions() as session:
        return {p.symbol: p.quantity for p in await repo.positions_of(session, account)}


async def state(client: httpx.AsyncClient, account: str, run: uuid.UUID | None = None) -> Any:
    """Everything the API says about an account (and a run): for before/after comparisons."""
    out = [
        (await client.get(f"/accounts/{account}")).json(),
        (await client.get(f"/accounts/{account}/holdings")).json(),
        (await client.get(f"/accounts/{account}/trades")).json()["items"],
    ]
    if run is not None:
        out.append((await client.get(f"/runs/{run}")).json())
    return out


# --- holdings -------------------------------------------------------------------------------


async def test_holdings_snapshot_replaces_the_old_one_and_an_older_one_is_ignored(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    assert await positions(db, account) == {"ZZA": Decimal(100)}

    await deliver(db, holdings(account, at(20), "200", {"ZZA": "50", "ZZC": "8"}, fill_ids=["F1"]))
    assert await positions(db, account) == {"ZZA": Decimal(50), "ZZC": Decimal(8)}

    # A snapshot produced earlier, delivered late: holdings stay, its fills still count.
    await deliver(db, holdings(account, at(10), "999", {"ZZB": "1"}, fill_ids=["F0"]))
    assert await positions(db, account) == {"ZZA": Decimal(50), "ZZC": Decimal(8)}
    body = (await client.get(f"/accounts/{account}/holdings")).json()
    assert body["cash"] == "200.000000"
    assert body["market_value"] == "740.00"  # 200 + 50*10 + 8*5
    async with db.sessions() as session:
        snapshot = await repo.get_holdings(session, account)
    assert snapshot is not None and snapshot.fill_ids == ["F1"]

    # A later business date wins even with an earlier event time.
    await deliver(db, holdings(account, at(5), "0", {"ZZB": "37"}, as_of=date(2026, 11, 21)))
    assert await positions(db, account) == {"ZZB": Decimal(37)}


async def test_holdings_report_weights_targets_and_cash_row(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)  # 100 ZZA @10 = 1000, cash 1000, target 50/50 A/B
    body = (await client.get(f"/accounts/{account}/holdings")).json()
    lines = {line["symbol"]: line for line in body["lines"]}
    assert set(lines) == {"ZZA", "ZZB", "CASH"}
    assert lines["ZZA"]["market_value"] == "1000.00"
    assert Decimal(lines["ZZA"]["weight"]) == Decimal("0.5")
    assert Decimal(lines["ZZA"]["difference"]) == 0
    assert Decimal(lines["ZZB"]["quantity"]) == 0 and Decimal(
        lines["ZZB"]["target_weight"]
    ) == Decimal("0.5")
    assert Decimal(lines["ZZB"]["difference"]) == Decimal("-0.5")
    assert lines["CASH"]["kind"] == "cash" and Decimal(lines["CASH"]["weight"]) == Decimal("0.5")
    assert sum(Decimal(v["weight"]) for v in lines.values()) == 1
    assert Decimal(body["max_drift"]) == Decimal("0.5")
    # The account list shows the stored value; drift only as the engine measured it.
    page = (await client.get("/accounts", params={"search": account})).json()
    assert page["total"] == 1
    item = page["items"][0]
    assert item["market_value"] == "2000.00" and item["securities_value"] == "1000.00"
    assert item["positions"] == 1 and item["unpriced_positions"] == 0
    assert item["max_drift"] is None and item["out_of_tolerance"] is False
    assert item["last_measured"] is None and Decimal(item["tolerance"]) == Decimal("0.01")
    assert item["model_id"] == model
    run = uuid.uuid4()
    await deliver(db, drift(account, model, run, at(5), out=True, max_abs_drift="0.4875"))
    item = (await client.get("/accounts", params={"search": account})).json()["items"][0]
    assert Decimal(item["max_drift"]) == Decimal("0.4875") and item["out_of_tolerance"] is True
    assert item["last_measured"]["run_id"] == str(run)


async def test_a_umas_targets_are_its_sleeves_weights_times_their_models(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)  # 100 ZZA @10 = 1000, cash 1000
    other = new_model()
    await deliver(
        db,
        envelope(
            example("model-changed", model_id=other, version=1,
                    targets=[{"symbol": "ZZC", "weight": "1"}]),
            key=other,
            time=at(4),
        ),
    )  # fmt: skip
    band = {"kind": "absolute", "width": "0.05"}
    strategy = {
        "sleeves": [
            {"sleeve_id": "core", "model_id": model, "weight": "0.6", "band": band},
            {"sleeve_id": "small", "model_id": other, "weight": "0.4", "band": band},
        ]
    }
    uma = example("account-changed", account_id=account, model_id=None, strategy=strategy)
    await deliver(db, envelope(uma, key=account, time=at(5)))
    body = (await client.get(f"/accounts/{account}/holdings")).json()
    targets = {line["symbol"]: Decimal(line["target_weight"]) for line in body["lines"]}
    assert targets == {"ZZA": Decimal("0.3"), "ZZB": Decimal("0.3"), "ZZC": Decimal("0.4"),
                       "CASH": 0}  # fmt: skip
    summary = (await client.get(f"/accounts/{account}")).json()
    assert [(s["sleeve_id"], s["weight"]) for s in summary["sleeves"]] == [
        ("core", "0.6000000000"),
        ("small", "0.4000000000"),
    ]
    assert summary["max_drift"] is None  # no run has measured it
    models = {m["model_id"]: m for m in (await client.get("/models")).json()["items"]}
    assert models[other]["accounts"] == 1
    # back to an SMA: the sleeves go
    await deliver(db, envelope(example("account-changed", account_id=account, model_id=model),
                               key=account, time=at(6)))  # fmt: skip
    assert (await client.get(f"/accounts/{account}")).json()["sleeves"] == []


# --- trades and fills -----------------------------------------------------------------------


async def test_fills_accumulate_to_filled_and_a_fill_twice_counts_once(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    buy = trade("ZZB", "buy", "12", "20")
    await deliver(db, proposed(account, model, run, proposal, [buy], at(30)))
    await deliver(db, approved(account, proposal, [buy], at(31)))

    async def the_trade() -> dict[str, Any]:
        rows = (await client.get(f"/accounts/{account}/trades")).json()["items"]
        assert len(rows) == 1
        return rows[0]  # type: ignore[no-any-return]

    assert (await the_trade())["status"] == "approved"
    first = fill(account, buy, proposal, f"X-{uuid.uuid4()}", "5", "20.00", at(40))
    await deliver(db, first)
    await deliver(db, first)  # same event again, straight to the handler
    row = await the_trade()
    assert row["status"] == "partially_filled"
    assert Decimal(row["filled_quantity"]) == 5 and Decimal(row["average_price"]) == 20
    await deliver(db, fill(account, buy, proposal, f"X-{uuid.uuid4()}", "7", "21.00", at(41)))
    row = await the_trade()
    assert row["status"] == "filled"
    assert Decimal(row["filled_quantity"]) == 12
    assert Decimal(row["average_price"]) == Decimal("20.583333")  # (100 + 147) / 12
    assert row["fills"] == 2 and row["fills_reflected"] == 0
    assert row["explanation"] == "Buy 12 ZZB to bring it to its target."
    assert row["run_id"] == str(run)


async def test_events_out_of_order_converge(db: Database, client: httpx.AsyncClient) -> None:
    """A fill before the proposal, an approval before the proposal: same end state."""
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    buy = trade("ZZB", "buy", "10", "20")
    await deliver(db, approved(account, proposal, [buy], at(31)))
    await deliver(db, fill(account, buy, proposal, f"X-{uuid.uuid4()}", "10", "20", at(40)))
    rows = (await client.get(f"/accounts/{account}/trades")).json()["items"]
    assert rows[0]["status"] == "filled" and rows[0]["run_id"] is None
    await deliver(db, proposed(account, model, run, proposal, [buy], at(30)))
    rows = (await client.get(f"/accounts/{account}/trades")).json()["items"]
    assert rows[0]["status"] == "filled" and rows[0]["run_id"] == str(run)
    assert rows[0]["approved_by"] == "policy:auto-approve"


async def test_a_trade_is_written_once_per_step_and_a_replay_writes_nothing(
    db: Database, client: httpx.AsyncClient
) -> None:
    """Proposed: complete in one write (run and status included); approved: one more; the
    same event again rewrites no row (its row version, xmin, stays)."""
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    buy = trade("ZZB", "buy", "10", "20")

    async def version() -> tuple[str, str, str | None]:
        async with db.sessions() as session:
            row = (
                await session.execute(
                    text("SELECT xmin::text, status, run_id::text FROM trades WHERE trade_id = :t"),
                    {"t": buy.trade_id},
                )
            ).one()
        return row[0], row[1], row[2]

    await deliver(db, proposed(account, model, run, proposal, [buy], at(30)))
    first = await version()
    assert first[1:] == ("proposed", str(run))
    await deliver(db, proposed(account, model, run, proposal, [buy], at(30)))
    assert await version() == first
    await deliver(db, approved(account, proposal, [buy], at(31)))
    second = await version()
    assert second[0] != first[0] and second[1:] == ("approved", str(run))
    await deliver(db, approved(account, proposal, [buy], at(31)))
    assert await version() == second


async def test_tax_aware_trades_keep_their_lots_and_tax_and_the_run_sums_it(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    sell = trade("ZZA", "sell", "30", "10", lot_ids=["L1", "L2"], estimated_tax="-42.50",
                 sleeve_id="core")  # fmt: skip
    gain = trade("ZZC", "sell", "10", "5", lot_ids=["L9"], estimated_tax="7.40")
    buy = trade("ZZB", "buy", "15", "20")
    await deliver(db, proposed(account, model, run, proposal, [sell, gain, buy], at(30)))
    rows = {
        r["symbol"]: r for r in (await client.get(f"/accounts/{account}/trades")).json()["items"]
    }
    assert rows["ZZA"]["lot_ids"] == ["L1", "L2"] and rows["ZZA"]["sleeve_id"] == "core"
    assert Decimal(rows["ZZA"]["estimated_tax"]) == Decimal("-42.50")
    assert rows["ZZB"]["lot_ids"] is None and rows["ZZB"]["estimated_tax"] is None
    progress = (await client.get(f"/runs/{run}")).json()
    assert Decimal(progress["estimated_tax"]) == Decimal("-35.10")


async def test_rejected_order_carries_its_reason(db: Database, client: httpx.AsyncClient) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    sell = trade("ZZA", "sell", "30", "10")
    await deliver(db, proposed(account, model, run, proposal, [sell], at(30)))
    await deliver(db, chunk_done(run, at(30), model=model))
    await deliver(db, approved(account, proposal, [sell], at(31)))
    reject = example(
        "order-rejected",
        trade_id=str(sell.trade_id),
        proposal_id=str(proposal),
        account_id=account,
        symbol="ZZA",
        side="sell",
        quantity="30",
        reason="security halted",
    )
    await deliver(db, envelope(reject, key=account, time=at(35)))
    rows = (await client.get(f"/accounts/{account}/trades")).json()["items"]
    assert rows[0]["status"] == "rejected" and rows[0]["rejected_reason"] == "security halted"
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["trades_rejected"] == 1 and progress["complete"] is True


@pytest.mark.parametrize("declined_first", [False, True])
async def test_declined_proposal_finishes_its_trades_in_either_order(
    db: Database, client: httpx.AsyncClient, declined_first: bool
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    trades_ = [trade("ZZA", "sell", "30", "10"), trade("ZZB", "buy", "15", "20")]
    events = [
        proposed(account, model, run, proposal, trades_, at(30)),
        declined(account, proposal, at(31)),
    ]
    for event in reversed(events) if declined_first else events:
        await deliver(db, event)
    await deliver(db, chunk_done(run, at(30), trades=2, model=model))
    rows = (await client.get(f"/accounts/{account}/trades")).json()["items"]
    assert sorted(r["status"] for r in rows) == ["declined", "declined"]
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["trades_declined"] == 2 and progress["trades_open"] == 0
    assert progress["complete"] is True and progress["progress"] == 1.0
    [member] = (await client.get(f"/runs/{run}/accounts")).json()["items"]
    assert member["trades_declined"] == 2 and member["trades_open"] == 0


@pytest.mark.parametrize("approved_first", [False, True])
async def test_a_trade_removed_before_approval_is_declined_in_either_order(
    db: Database, client: httpx.AsyncClient, approved_first: bool
) -> None:
    """A person removed ZZB from the proposal and lowered ZZA before approving it."""
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    sell, buy = trade("ZZA", "sell", "30", "10"), trade("ZZB", "buy", "15", "20")
    lowered = sell.model_copy(update={"quantity": Decimal("20"), "estimated_value": Decimal("200")})
    events = [
        proposed(account, model, run, proposal, [sell, buy], at(30)),
        approved(account, proposal, [lowered], at(31)),
    ]
    for event in reversed(events) if approved_first else events:
        await deliver(db, event)
    await deliver(db, chunk_done(run, at(30), trades=2, model=model))
    rows = {
        r["symbol"]: r for r in (await client.get(f"/accounts/{account}/trades")).json()["items"]
    }
    assert rows["ZZB"]["status"] == "declined"
    assert rows["ZZA"]["status"] == "approved" and Decimal(rows["ZZA"]["quantity"]) == 20
    await deliver(db, fill(account, lowered, proposal, f"F-{proposal}", "20", "10", at(40)))
    await deliver(db, holdings(account, at(41), "1200", {"ZZA": "80"}, fill_ids=[f"F-{proposal}"]))
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["trades_declined"] == 1 and progress["trades_filled"] == 1
    assert progress["trades_open"] == 0 and progress["complete"] is True


async def test_v2_snapshot_lots_are_valued_with_term_and_wash_adjustment(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    lots = [
        # 60 ZZA bought long ago at 12 (a loss at 10), 40 at 7 last month with a wash adjustment
        {"lot_id": "L1", "quantity": "60", "acquired": "2024-05-02", "cost_basis": "720"},
        {"lot_id": "L2", "quantity": "40", "acquired": "2026-10-01", "cost_basis": "310",
         "wash_adjustment": "30"},
    ]  # fmt: skip
    payload = ev.HoldingsReconciledV2.model_validate(
        {
            "account_id": account,
            "household_id": "HH-1",
            "as_of": "2026-11-21",
            "cash": "500",
            "positions": [
                {"symbol": "ZZA", "quantity": "100", "cost_basis": "1030", "lots": lots},
                {"symbol": "ZZQ", "quantity": "5", "cost_basis": "50",
                 "lots": [{"lot_id": "L3", "quantity": "5", "acquired": "2026-11-02",
                           "cost_basis": "50"}]},
            ],
            "cause": "corporate-action",
            "action_id": "CA-1",
        }
    )  # fmt: skip
    await deliver(db, envelope(payload, key=account, time=at(10)))
    body = (await client.get(f"/accounts/{account}/lots", params={"on": "2026-11-22"})).json()
    by_id = {lot["lot_id"]: lot for lot in body["lots"]}
    assert by_id["L1"]["term"] == "long" and by_id["L1"]["unrealized_gain"] == "-120.00"
    assert by_id["L2"]["term"] == "short" and by_id["L2"]["unrealized_gain"] == "90.00"
    assert Decimal(by_id["L2"]["wash_adjustment"]) == 30
    assert by_id["L3"]["price"] is None and by_id["L3"]["unrealized_gain"] is None
    assert body["unrealized_long_term"] == "-120.00"
    assert body["unrealized_short_term"] == "90.00"
    assert body["unpriced_lots"] == 1
    # a later v1 snapshot (no lots) replaces the lots with none
    await deliver(db, holdings(account, at(20), "500", {"ZZA": "100"}, as_of=date(2026, 11, 22)))
    assert (await client.get(f"/accounts/{account}/lots")).json()["lots"] == []


async def stored_lots(db: Database, account: str) -> tuple[dict[str, tuple[Any, ...]], str]:
    """Each stored lot's columns, and the row version of the account's lots (xmin: it changes
    when the row is written)."""
    async with db.sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT l.lot_id, l.symbol, l.quantity, l.acquired, l.cost_basis,"
                    " l.wash_adjustment, l.sleeve_id, a.xmin::text FROM account_lots a"
                    " CROSS JOIN LATERAL json_to_recordset(a.lots) AS l(lot_id text,"
                    " symbol text, quantity numeric, acquired date, cost_basis numeric,"
                    " wash_adjustment numeric, sleeve_id text) WHERE a.account_id = :a"
                ),
                {"a": account},
            )
        ).all()
        return {r[0]: tuple(r[1:7]) for r in rows}, rows[0][7] if rows else ""


async def position_versions(db: Database, account: str) -> dict[str, str]:
    """The row version (xmin) and last locker (xmax) of each stored position of the account:
    a row that is written or locked changes."""
    async with db.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT symbol, xmin::text || '/' || xmax::text FROM positions"
                " WHERE account_id = :a"
            ),
            {"a": account},
        )
        return {r[0]: r[1] for r in rows}


async def test_a_later_snapshot_replaces_the_lots_and_one_repeating_them_writes_nothing(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)

    def snapshot(time_s: int, positions: list[dict[str, Any]]) -> Any:
        payload = ev.HoldingsReconciledV2.model_validate(
            {"account_id": account, "as_of": "2026-11-21", "cash": "500",
             "positions": positions, "cause": "fills"}
        )  # fmt: skip
        return envelope(payload, key=account, time=at(time_s))

    def lot(lot_id: str, quantity: str, basis: str, **more: str) -> dict[str, str]:
        return {"lot_id": lot_id, "quantity": quantity, "acquired": "2026-01-05",
                "cost_basis": basis, **more}  # fmt: skip

    zza = [lot("A1", "60", "720"), lot("A2", "40", "310", wash_adjustment="30")]
    await deliver(
        db,
        snapshot(10, [
            {"symbol": "ZZA", "quantity": "100", "cost_basis": "1030", "lots": zza},
            {"symbol": "ZZB", "quantity": "5", "cost_basis": "100",
             "lots": [lot("B1", "5", "100")]},
            {"symbol": "ZZC", "quantity": "1", "cost_basis": "5", "lots": [lot("C1", "1", "5")]},
        ]),
    )  # fmt: skip
    before, _ = await stored_lots(db, account)
    # A1 as it was; A2 partly sold; B1 gone with its position; C2 new, in a sleeve
    later = [
        {"symbol": "ZZA", "quantity": "90", "cost_basis": "952.5",
         "lots": [zza[0], lot("A2", "30", "232.5", wash_adjustment="22.5")]},
        {"symbol": "ZZC", "quantity": "3", "cost_basis": "15",
         "lots": [lot("C1", "1", "5"), lot("C2", "2", "10", sleeve_id="core")]},
    ]  # fmt: skip
    await deliver(db, snapshot(20, later))
    after, version = await stored_lots(db, account)
    assert sorted(after) == ["A1", "A2", "C1", "C2"]
    assert after["A1"] == before["A1"] and after["C1"] == before["C1"]
    assert after["A2"] == ("ZZA", Decimal(30), date(2026, 1, 5), Decimal("232.5"),
                           Decimal("22.5"), None)  # fmt: skip
    assert after["C2"] == ("ZZC", Decimal(2), date(2026, 1, 5), Decimal(10), Decimal(0),
                           "core")  # fmt: skip
    # a later snapshot with the same lots and positions leaves their rows unwritten
    written = await position_versions(db, account)
    await deliver(db, snapshot(30, later))
    assert await stored_lots(db, account) == (after, version)
    assert await position_versions(db, account) == written
    assert await positions(db, account) == {"ZZA": Decimal(90), "ZZC": Decimal(3)}
    body = (await client.get(f"/accounts/{account}")).json()
    assert body["positions"] == 2 and Decimal(body["market_value"]) == 500 + 90 * 10 + 3 * 5


async def test_lots_of_an_unknown_account_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/accounts/NOPE-1/lots")
    assert response.status_code == 404


# --- runs -----------------------------------------------------------------------------------


async def test_run_is_complete_only_when_fills_reach_holdings(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    await deliver(db, holdings(account, at(4), "500", {"ZZA": "150"}, cause="opening-balance"))
    run, proposal = uuid.uuid4(), uuid.uuid4()
    sell = trade("ZZA", "sell", "50", "10")
    buy = trade("ZZB", "buy", "50", "20")
    await deliver(db, drift(account, model, run, at(29)))
    await deliver(db, proposed(account, model, run, proposal, [sell, buy], at(30)))
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["accounts_measured"] == 1 and progress["accounts_out_of_tolerance"] == 1
    assert progress["trades"] == 2 and progress["trades_awaiting_approval"] == 2
    assert progress["complete"] is False and progress["chunks"] is None
    await deliver(db, chunk_done(run, at(30), trades=2, model=model))
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["chunks"] == 1 and progress["expected_trades"] == 2
    assert progress["kind"] == "rebalance" and progress["trigger"] == "model-change"

    await deliver(db, approved(account, proposal, [sell, buy], at(31)))
    f1, f2, f3 = (f"X-{uuid.uuid4()}" for _ in range(3))
    await deliver(db, fill(account, sell, proposal, f1, "50", "10", at(40)))
    await deliver(db, fill(account, buy, proposal, f2, "20", "20", at(41)))
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["trades_filled"] == 1 and progress["trades_partially_filled"] == 1
    assert progress["complete"] is False

    # The first fills reach the book of record; one trade is still partly open.
    await deliver(
        db, holdings(account, at(50), "1100", {"ZZA": "50", "ZZB": "20"}, fill_ids=[f1, f2])
    )
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["fills_reflected"] == 2 and progress["complete"] is False

    await deliver(db, fill(account, buy, proposal, f3, "30", "20", at(60)))
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["trades_filled"] == 2 and progress["trades_open"] == 0
    assert progress["fills"] == 3 and progress["fills_reflected"] == 2
    assert progress["complete"] is False  # every trade filled, one fill not in holdings yet

    await deliver(db, holdings(account, at(70), "0", {"ZZA": "100", "ZZB": "50"}, fill_ids=[f3]))
    progress = (await client.get(f"/runs/{run}")).json()
    assert progress["complete"] is True and progress["progress"] == 1.0
    assert progress["last_reconciled_at"] == at(70).isoformat().replace("+00:00", "Z")
    assert progress["first_event_at"] == at(29).isoformat().replace("+00:00", "Z")
    # The list shows the new holdings' value, and the run's verdict until the next one.
    item = (await client.get("/accounts", params={"search": account})).json()["items"][0]
    assert item["market_value"] == "2000.00" and item["cash"] == "0.000000"
    assert Decimal(item["max_drift"]) == Decimal("0.019") and item["out_of_tolerance"] is True
    assert item["last_measured"]["run_id"] == str(run)

    listed = (await client.get("/runs", params={"model_id": model, "model_version": 1})).json()
    assert [r["run_id"] for r in listed["items"]] == [str(run)] and listed["next_offset"] is None
    none = (await client.get("/runs", params={"model_id": model, "model_version": 2})).json()
    assert none["items"] == [] and none["next_offset"] is None


async def test_same_event_twice_has_one_effect(db: Database, client: httpx.AsyncClient) -> None:
    """Every handler called twice with the same envelope (the inbox is bypassed)."""
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    sell, buy = trade("ZZA", "sell", "50", "10"), trade("ZZB", "buy", "50", "20")
    fid = f"X-{uuid.uuid4()}"
    reject = example(
        "order-rejected",
        trade_id=str(buy.trade_id),
        proposal_id=str(proposal),
        account_id=account,
        symbol="ZZB",
        side="buy",
        quantity="50",
    )
    events = [
        envelope(example("account-changed", account_id=account, model_id=model), key=account,
                 time=at(2)),
        drift(account, model, run, at(29)),
        proposed(account, model, run, proposal, [sell, buy], at(30)),
        chunk_done(run, at(30), trades=2, model=model),
        approved(account, proposal, [sell, buy], at(31)),
        fill(account, sell, proposal, fid, "50", "10", at(40)),
        envelope(reject, key=account, time=at(41)),
        holdings(account, at(50), "1500", {"ZZA": "50"}, fill_ids=[fid]),
    ]  # fmt: skip
    for event in events:
        await deliver(db, event)
    once = await state(client, account, run)
    summary_once = (await client.get("/summary")).json()
    for event in events:
        await deliver(db, event)
    assert await state(client, account, run) == once
    assert (await client.get("/summary")).json() == summary_once
    assert once[3]["complete"] is True and once[3]["fills"] == 1


async def test_older_model_version_does_not_replace_newer(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    v2 = example("model-changed", model_id=model, version=2,
                 targets=[{"symbol": "ZZC", "weight": "1"}])  # fmt: skip
    await deliver(db, envelope(v2, key=model, time=at(10)))
    v1 = example("model-changed", model_id=model, version=1,
                 targets=[{"symbol": "ZZA", "weight": "1"}])  # fmt: skip
    await deliver(db, envelope(v1, key=model, time=at(11)))
    body = (await client.get(f"/accounts/{account}/holdings")).json()
    targets = {line["symbol"]: line["target_weight"] for line in body["lines"]}
    assert Decimal(targets["ZZC"]) == 1 and Decimal(targets["ZZA"]) == 0
    assert body["model_version"] == 2


# --- REST -----------------------------------------------------------------------------------


async def test_unknown_ids_are_404_problems(client: httpx.AsyncClient) -> None:
    for path in (
        "/accounts/NOPE-1",
        "/accounts/NOPE-1/holdings",
        "/accounts/NOPE-1/trades",
        f"/runs/{uuid.uuid4()}",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
        assert "NOPE-1" in response.json()["detail"] or "run" in response.json()["detail"]


async def test_bad_query_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.get("/accounts", params={"sort": "password"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.sort"
    assert (await client.get("/runs/not-a-uuid")).status_code == 422


async def test_account_list_filters_sorts_and_pages(
    db: Database, client: httpx.AsyncClient
) -> None:
    model = new_model()
    accounts = [new_account() for _ in range(3)]
    for a in accounts:
        await setup_book(db, a, model)
    # The second account is on target: 50 ZZA (500) and 25 ZZB (500), no cash; the engine
    # says so, and that the others are out of tolerance.
    await deliver(db, holdings(accounts[1], at(10), "0", {"ZZA": "50", "ZZB": "25"}))
    run = uuid.uuid4()
    for a, drift_ in zip(accounts, ("0.5", "0.001", "0.3"), strict=True):
        out = Decimal(drift_) > Decimal("0.01")
        await deliver(db, drift(a, model, run, at(11), out=out, max_abs_drift=drift_))
    page = (await client.get("/accounts", params={"model_id": model})).json()
    assert page["total"] == 3 and sorted(i["account_id"] for i in page["items"]) == sorted(accounts)
    out = (
        await client.get("/accounts", params={"model_id": model, "out_of_tolerance": "true"})
    ).json()
    assert {i["account_id"] for i in out["items"]} == {accounts[0], accounts[2]}
    inside = (
        await client.get("/accounts", params={"model_id": model, "out_of_tolerance": "false"})
    ).json()
    assert [i["account_id"] for i in inside["items"]] == [accounts[1]]
    by_drift = (
        await client.get(
            "/accounts", params={"model_id": model, "sort": "max_drift", "order": "asc"}
        )
    ).json()
    assert [i["account_id"] for i in by_drift["items"]] == [accounts[1], accounts[2], accounts[0]]
    by_drift_desc = (
        await client.get(
            "/accounts", params={"model_id": model, "sort": "max_drift", "order": "desc"}
        )
    ).json()
    assert [i["account_id"] for i in by_drift_desc["items"]] == [
        accounts[0],
        accounts[2],
        accounts[1],
    ]
    second = (
        await client.get("/accounts", params={"model_id": model, "limit": 2, "offset": 2})
    ).json()
    assert second["total"] == 3 and len(second["items"]) == 1 and second["next_offset"] is None
    beyond = (await client.get("/accounts", params={"model_id": model, "offset": 10})).json()
    assert beyond["total"] == 3 and beyond["items"] == [] and beyond["next_offset"] is None
    summary = (await client.get(f"/accounts/{accounts[1]}")).json()
    assert summary["market_value"] == "1000.00" and summary["out_of_tolerance"] is False


async def test_summary_counts(db: Database, client: httpx.AsyncClient) -> None:
    before = (await client.get("/summary")).json()
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    buy = trade("ZZB", "buy", "10", "20")
    await deliver(db, drift(account, model, run, at(29)))
    await deliver(db, proposed(account, model, run, proposal, [buy], at(30)))
    after = (await client.get("/summary")).json()
    assert after["accounts"] == before["accounts"] + 1
    assert after["models"] == before["models"] + 1
    assert after["proposals"] == before["proposals"] + 1
    assert after["runs"] == before["runs"] + 1
    assert (
        after["trades_by_status"].get("proposed", 0)
        == before["trades_by_status"].get("proposed", 0) + 1
    )
    assert Decimal(after["total_market_value"]) == Decimal(before["total_market_value"]) + 2000
    assert after["accounts_out_of_tolerance"] == before["accounts_out_of_tolerance"] + 1


async def test_run_accounts_and_models(db: Database, client: httpx.AsyncClient) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    run, proposal = uuid.uuid4(), uuid.uuid4()
    buy = trade("ZZB", "buy", "50", "20")
    await deliver(db, drift(account, model, run, at(29)))
    await deliver(db, proposed(account, model, run, proposal, [buy], at(30)))
    await deliver(db, approved(account, proposal, [buy], at(31)))
    await deliver(db, fill(account, buy, proposal, f"X-{uuid.uuid4()}", "50", "20", at(40)))
    rows = (await client.get(f"/runs/{run}/accounts")).json()["items"]
    assert len(rows) == 1
    row = rows[0]
    assert row["account_id"] == account and row["out_of_tolerance"] is True
    assert row["trades"] == 1 and row["trades_filled"] == 1 and row["trades_open"] == 0
    assert row["fills"] == 1 and row["fills_reflected"] == 0
    assert (await client.get(f"/runs/{uuid.uuid4()}/accounts")).status_code == 404
    models = {m["model_id"]: m for m in (await client.get("/models")).json()["items"]}
    assert models[model]["accounts"] == 1 and models[model]["securities"] == 2


async def test_cash_overdraft_is_reported_not_an_error(
    db: Database, client: httpx.AsyncClient
) -> None:
    account, model = new_account(), new_model()
    await setup_book(db, account, model)
    await deliver(db, holdings(account, at(10), "-100", {"ZZA": "20", "ZZB": "5"}))
    body = (await client.get(f"/accounts/{account}/holdings")).json()
    lines = {line["symbol"]: line for line in body["lines"]}
    assert body["market_value"] == "200.00"  # 200 + 100 - 100
    assert Decimal(lines["CASH"]["weight"]) == Decimal("-0.5")
    assert Decimal(lines["ZZA"]["weight"]) == 1 and Decimal(lines["ZZA"]["difference"]) == Decimal(
        "0.5"
    )
