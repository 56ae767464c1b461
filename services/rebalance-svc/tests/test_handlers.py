"""rebalance-svc's consumers on real PostgreSQL: the read model fills from events, and a
model change rebalances every following account, skipping (and naming) the ones it cannot."""

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
import rebalance_test_support as support
from ballast_common import testing
from ballast_common.contracts.events import (
    AccountChangedV1,
    FillsReceivedV1,
    HoldingsReconciledV1,
    ModelChangedV1,
    ModelTargetV1,
    OrderRejectedV1,
    PositionV1,
    SecuritiesChangedV1,
    SecurityV1,
    TradesApprovedV1,
    TradeV1,
    TradingHoldChangedV1,
)
from ballast_common.outbox import outbox
from ballast_common.testing import migrated_database
from ballast_engine.rebalance import rebalance
from ballast_engine.scenario import scenario_from_dict
from rebalance_svc import repository, service
from rebalance_svc.handlers import subscriptions
from rebalance_svc.main import spec
from rebalance_svc.settings import Settings
from rebalance_svc.tables import TradeInFlight
from rebalance_test_support import decline_trades_in_flight, process_requested_chunks
from sqlalchemy import select

pytestmark = pytest.mark.integration
SUBSCRIPTIONS = subscriptions(Settings())
deliver = partial(support.deliver, run_chunks=False)  # these tests run the chunks themselves


def account(account_id: str) -> AccountChangedV1:
    return AccountChangedV1(
        account_id=account_id,
        household_id="HH-1",
        name="x",
        account_type="taxable",
        model_id="core",
        status="active",
        auto_approve=True,
    )


def model(version: int, **weights: str) -> ModelChangedV1:
    return ModelChangedV1(
        model_id="core",
        name="Core",
        version=version,
        changed_by="pm",
        targets=[ModelTargetV1(symbol=s, weight=Decimal(w)) for s, w in weights.items()],
    )


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


async def test_model_change_rebalances_followers_and_skips_bad_accounts(db, run_chunks):
    await deliver(
        db,
        SecuritiesChangedV1(
            securities=[
                SecurityV1(symbol=s, name=s, asset_class="US Equity", sector="IT", price=Decimal(p))
                for s, p in (("AAA", "100"), ("BBB", "50"))
            ]
        ),
        "security-master",
    )
    for account_id in ("R-1", "R-2", "R-3"):
        await deliver(db, account(account_id), account_id)
    await deliver(
        db,
        HoldingsReconciledV1(
            account_id="R-1",
            as_of=date(2026, 11, 20),
            cash=Decimal("10000"),
            positions=[],
            cause="opening-balance",
        ),
        "R-1",
    )
    await deliver(
        db,
        HoldingsReconciledV1(
            account_id="R-2",
            as_of=date(2026, 11, 20),
            cash=Decimal("0"),
            cause="opening-balance",
            positions=[PositionV1(symbol="ZZZ", quantity=Decimal(5), cost_basis=Decimal(50))],
        ),
        "R-2",
    )
    # R-3 never got holdings
    await deliver(db, model(1, AAA="0.5", BBB="0.5"), "core")
    async with db.sessions() as s:
        [planned] = await repository.list_runs(s, "core", 1, 5, tenant=None)
    assert (planned.kind, planned.trigger, planned.accounts, planned.chunks) == (
        "rebalance",
        "model-change",
        3,
        1,
    )
    assert planned.finished_at is None
    assert await run_chunks(db) == 1
    assert await run_chunks(db) == 0  # a chunk is processed once

    async with db.sessions() as s:
        rows = (await s.execute(select(outbox.c.topic, outbox.c.value).order_by(outbox.c.id))).all()
    mine = [(t, json.loads(v)["payload"]) for t, v in rows]  # other modules share the outbox
    mine = [(t, p) for t, p in mine if p.get("account_id", "R-").startswith("R-")]
    proposals = [p for t, p in mine if t == "trades-proposed"]
    assert [p["account_id"] for p in proposals] == ["R-1"]
    assert {(t["symbol"], t["side"], t["quantity"]) for t in proposals[0]["trades"]} == {
        ("AAA", "buy", "50"),
        ("BBB", "buy", "100"),
    }
    drift = [p["account_id"] for t, p in mine if t == "drift-detected"]
    assert drift == ["R-1"]

    async with db.sessions() as s:
        run = await service.run_with_skipped(s, planned.run_id, tenant=None)
    assert run.accounts_evaluated == 1 and run.trades == 2 and run.complete
    assert (run.chunks_done, run.chunks_failed, run.accounts_skipped) == (1, 0, 2)
    assert set(run.skipped) == {"R-2", "R-3"}
    assert "ZZZ" in run.skipped["R-2"] and "R-2" in run.skipped["R-2"]
    assert run.skipped["R-3"] == "no holdings reconciled yet"
    [done] = [p for t, p in mine if t == "rebalance-chunk-completed" and p["run_id"] == run.run_id]
    assert (done["status"], done["proposals"], done["trades"], done["accounts_skipped"]) == (
        "completed",
        1,
        2,
        2,
    )
    async with db.sessions() as s:
        stored = await repository.get_scenario(s, run.run_id, "R-1", tenant=None)
    replayed = rebalance(scenario_from_dict(stored))
    assert [(t.symbol, t.side.value, t.quantity) for t in replayed.trades] == [
        (t["symbol"], t["side"], Decimal(t["quantity"])) for t in proposals[0]["trades"]
    ]


async def test_a_stale_model_version_is_ignored(db):
    await deliver(db, model(3, AAA="1"), "core")
    await deliver(db, model(2, BBB="1"), "core")

    async with db.sessions() as s:
        stored = await repository.get_model(s, "core")
        runs = await repository.list_runs(s, "core", 2, 5, tenant=None)
    assert stored.version == 3 and stored.targets == {"AAA": "1"}
    assert runs == []


async def test_a_run_in_chunks_completes_when_a_chunk_fails_after_its_attempts(db, monkeypatch):
    """Chunks of one account each; the chunk of R-2 breaks every time it is tried: it is tried
    `chunk_attempts` times, dead-lettered with its reason, counted failed, and the run still
    completes with the other chunks' work."""
    settings = Settings(chunk_size=1, chunk_attempts=2)
    await testing.deliver(db, subscriptions(settings), model(10, AAA="0.4", BBB="0.6"))
    async with db.sessions() as s:
        [planned] = await repository.list_runs(s, "core", 10, 5, tenant=None)
    assert (planned.accounts, planned.chunks) == (3, 3)

    tries: list[str] = []
    real = service._rebalance_chunk

    async def breaks_on_r2(uow, request, accounts, *args):
        tries.append(request.account_ids[0])
        if request.account_ids == ["R-2"]:
            raise RuntimeError("engine blew up on R-2")
        await real(uow, request, accounts, *args)

    monkeypatch.setattr(service, "_rebalance_chunk", breaks_on_r2)
    await process_requested_chunks(db, settings)
    assert tries.count("R-2") == 3  # the batch try, then its two attempts alone
    async with db.sessions() as s:
        run = await service.run_with_skipped(s, planned.run_id, tenant=None)
        rows = (await s.execute(select(outbox.c.topic, outbox.c.value).order_by(outbox.c.id))).all()
    assert run.complete and (run.chunks_done, run.chunks_failed) == (3, 1)
    assert run.skipped["R-2"] == "chunk 1 failed: engine blew up on R-2"
    assert run.proposals == 1  # R-1's; R-3 has no holdings
    letters = [json.loads(v) for t, v in rows if t == "dlq.rebalance-svc"]
    assert letters[-1]["error"] == "engine blew up on R-2 (after 2 attempts)"
    completed = [json.loads(v)["payload"] for t, v in rows if t == "rebalance-chunk-completed"]
    mine = sorted((c["chunk"], c["status"]) for c in completed if c["run_id"] == planned.run_id)
    assert mine == [(0, "completed"), (1, "failed"), (2, "completed")]


async def _proposal_of(db, run_id: str, account_id: str) -> dict:
    async with db.sessions() as s:
        rows = (await s.execute(select(outbox.c.topic, outbox.c.value))).all()
    [proposal] = [
        json.loads(v)["payload"]
        for t, v in rows
        if t == "trades-proposed"
        and json.loads(v)["payload"]["run_id"] == run_id
        and json.loads(v)["payload"]["account_id"] == account_id
    ]
    return proposal


async def test_an_account_is_not_traded_again_before_its_trades_are_settled(db):
    """R-1's trades of one run are in flight until each is filled and reflected by the book of
    record (in either order) or rejected: a run in between skips R-1, saying why."""
    await deliver(db, model(20, AAA="0.3", BBB="0.7"), "core")
    await process_requested_chunks(db)
    async with db.sessions() as s:
        [first] = await repository.list_runs(s, "core", 20, 5, tenant=None)
    proposal = await _proposal_of(db, first.run_id, "R-1")
    buy, other = proposal["trades"]

    async def second_run(version: int) -> dict[str, str]:
        # no declining here: the trades stand
        await testing.deliver(db, SUBSCRIPTIONS, model(version, AAA="0.31", BBB="0.69"))
        await process_requested_chunks(db)
        async with db.sessions() as s:
            [run] = await repository.list_runs(s, "core", version, 5, tenant=None)
            return (await service.run_with_skipped(s, run.run_id, tenant=None)).skipped

    assert "2 trade(s) proposed earlier are not settled" in (await second_run(21))["R-1"]
    # the first trade: reflected by the book of record first, its fill arriving after
    fill = FillsReceivedV1(
        fill_id="F-1", client_order_id="BLK-1", trade_id=buy["trade_id"],
        proposal_id=proposal["proposal_id"], account_id="R-1", symbol=buy["symbol"],
        side=buy["side"], quantity=Decimal(buy["quantity"]), price=Decimal("100"),
        executed_at=datetime.now(UTC),
    )  # fmt: skip
    holdings = HoldingsReconciledV1(account_id="R-1", as_of=date(2026, 11, 21),
                                    cash=Decimal("10000"), positions=[], cause="fills",
                                    fill_ids=["F-1"])  # fmt: skip
    await deliver(db, holdings, "R-1")
    await deliver(db, fill, "R-1")
    assert "1 trade(s) proposed earlier" in (await second_run(22))["R-1"]
    # the second: the custodian rejected it
    rejected = OrderRejectedV1(
        client_order_id="BLK-2", trade_id=other["trade_id"],
        proposal_id=proposal["proposal_id"], account_id="R-1", symbol=other["symbol"],
        side=other["side"], quantity=Decimal(other["quantity"]), reason="halted",
    )  # fmt: skip
    await deliver(db, rejected, "R-1")
    assert "R-1" not in await second_run(23)
    await decline_trades_in_flight(db)


async def test_what_a_person_approved_is_what_stays_in_flight(db):
    """A proposal edited before approval (one trade removed, the other lowered): once its
    approval arrives, only the approved quantity of the approved trade keeps R-1 in flight."""
    await deliver(db, model(30, AAA="0.3", BBB="0.7"), "core")
    await process_requested_chunks(db)
    async with db.sessions() as s:
        [first] = await repository.list_runs(s, "core", 30, 5, tenant=None)
    proposal = await _proposal_of(db, first.run_id, "R-1")
    kept, removed = proposal["trades"]
    lowered = Decimal(kept["quantity"]) - 1
    approval = TradesApprovedV1(
        proposal_id=proposal["proposal_id"], account_id="R-1", approved_by="pm",
        trades=[TradeV1.model_validate({**kept, "quantity": str(lowered)})],
    )  # fmt: skip
    await deliver(db, approval, "R-1")
    async with db.sessions() as s:
        in_flight = (
            await s.execute(
                select(TradeInFlight.trade_id, TradeInFlight.quantity).where(
                    TradeInFlight.proposal_id == proposal["proposal_id"]
                )
            )
        ).all()
    assert [(str(t), q) for t, q in in_flight] == [(kept["trade_id"], lowered)]
    assert removed["trade_id"] not in {str(t) for t, _ in in_flight}
    fill = FillsReceivedV1(
        fill_id="F-30", client_order_id="BLK-30", trade_id=kept["trade_id"],
        proposal_id=proposal["proposal_id"], account_id="R-1", symbol=kept["symbol"],
        side=kept["side"], quantity=lowered, price=Decimal("100"),
        executed_at=datetime.now(UTC),
    )  # fmt: skip
    holdings = HoldingsReconciledV1(account_id="R-1", as_of=date(2026, 11, 21),
                                    cash=Decimal("10000"), positions=[], cause="fills",
                                    fill_ids=["F-30"])  # fmt: skip
    await deliver(db, fill, "R-1")
    await deliver(db, holdings, "R-1")
    async with db.sessions() as s:
        left = await repository.trades_in_flight(s, ["R-1"])
    assert left == {}, "the lowered quantity filled: nothing of the proposal is in flight"


async def test_an_account_held_from_trading_is_skipped_with_the_reason_until_released(
    db, run_chunks
):
    held_model = "held-core"
    await deliver(
        db,
        SecuritiesChangedV1(
            securities=[
                SecurityV1(symbol=s, name=s, asset_class="US Equity", sector="IT", price=Decimal(p))
                for s, p in (("AAA", "100"), ("BBB", "50"))
            ]
        ),
        "security-master",
    )
    for account_id in ("TH-1", "TH-2"):
        await deliver(
            db, account(account_id).model_copy(update={"model_id": held_model}), account_id
        )
        await deliver(
            db,
            HoldingsReconciledV1(
                account_id=account_id,
                as_of=date(2026, 11, 20),
                cash=Decimal("10000"),
                positions=[],
                cause="opening-balance",
            ),
            account_id,
        )
    reason = "quantity break: lot AAA-1 is 12 here, 10 at the custodian"
    hold = TradingHoldChangedV1(
        account_id="TH-1", held=True, reason=reason, custodian="ballast",
        business_date=date(2026, 11, 20),
    )  # fmt: skip
    await deliver(db, hold, "TH-1")

    async def model_change(version: int) -> Any:
        event = model(version, AAA="0.5", BBB="0.5").model_copy(update={"model_id": held_model})
        await support.deliver(db, event, held_model, run_chunks=False)
        await run_chunks(db)
        async with db.sessions() as s:
            [run] = await repository.list_runs(s, held_model, version, 5, tenant=None)
            return await service.run_with_skipped(s, run.run_id, tenant=None)

    first = await model_change(1)
    assert first.skipped == {"TH-1": f"held from trading: {reason}"}
    assert first.accounts_evaluated == 1 and first.proposals == 1  # TH-2 went

    await deliver(db, hold.model_copy(update={"held": False, "reason": None}), "TH-1")
    second = await model_change(2)
    assert "TH-1" not in second.skipped and second.accounts_evaluated == 2
