"""Filters on real PostgreSQL: conditions compiled to SQL for every field kind and operator
(over the account and its latest proposal), their validation naming the field, proposals of a
batch routed by the first enabled filter (also when the consumer redoes the batch one by one),
an account suspended by a filter, bulk approval by filter and by ids, accounts' advisor and
attributes, and tenants kept apart. Tenants are flt-* and ids FL-/FR- (the database is
shared)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from account_svc import filters_repository, service
from account_svc.filter_conditions import Condition, validate_conditions
from account_svc.main import spec
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import AccountIn
from account_svc.tables import Account
from account_test_support import remember_models
from ballast_common import audit
from ballast_common.auth import Role
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    ProposalMetricsV1,
    TradesProposedV1,
    TradeV1,
)
from ballast_common.db import Database
from ballast_common.testing import (
    api_client,
    consumer_records,
    envelope,
    migrated_database,
    outbox_events,
    service_consumer,
    unit_of_work,
)
from sqlalchemy import event, text
from sqlmodel import col, select

pytestmark = pytest.mark.integration

SELECTING, ROUTING, OTHER, SUSPENDING = "flt-a", "flt-r", "flt-b", "flt-s"
MODEL = {SELECTING: "fl-core", ROUTING: "fr-core", OTHER: "fb-core", SUSPENDING: "fs-core"}


# --- events and calls ---------------------------------------------------------------------------


def trade(side: str, value: str, tax: str | None = None) -> TradeV1:
    return TradeV1(
        trade_id=uuid.uuid4(),
        symbol="AAPL",
        side=side,  # type: ignore[arg-type]
        quantity=Decimal(1),
        estimated_price=Decimal(value),
        estimated_value=Decimal(value),
        reason="drift",
        explanation=f"{side} AAPL",
        estimated_tax=None if tax is None else Decimal(tax),
    )


def metrics(
    account_value: str = "100000",
    turnover: str = "5",
    tax: str = "0",
    drift: str = "1",
    buy: str = "0",
    sell: str = "0",
) -> ProposalMetricsV1:
    return ProposalMetricsV1(
        account_value=Decimal(account_value),
        buy_value=Decimal(buy),
        sell_value=Decimal(sell),
        turnover_percent=Decimal(turnover),
        estimated_tax=Decimal(tax),
        drift_before_percent=Decimal(drift),
        drift_after_percent=Decimal("0.1"),
    )


def proposed(
    account_id: str,
    tenant: str,
    trades: list[TradeV1] | None = None,
    cash_before: str = "1000",
    with_metrics: ProposalMetricsV1 | None = None,
) -> Envelope:
    event = TradesProposedV1(
        proposal_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        account_id=account_id,
        model_id=MODEL[tenant],
        model_version=1,
        trades=trades or [trade("buy", "800")],
        cash_before=Decimal(cash_before),
        cash_after_estimated=Decimal("0"),
        metrics=with_metrics,
    )
    trace = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    return envelope(event, tenant=tenant, source="rebalance-svc", traceparent=trace)


async def consume(db: Database, *events: Envelope) -> dict[str, int]:
    """The batch through account-svc's consumer (a failing batch is redone one by one)."""
    processor = service_consumer(db, spec.name, spec.subscriptions)
    return await processor.process(consumer_records(list(events)))


def caller(tenant: str, *roles: Role) -> dict[str, Any]:
    return {"tenant": tenant, "roles": roles or (Role.ADMIN,)}


async def open_accounts(db: Database, tenant: str, accounts: list[dict[str, Any]]) -> None:
    async with unit_of_work(db, "test") as uow:
        await service.open_accounts(
            uow,
            PostgresAccountRepository(uow.session),
            tenant,
            f"advisor@{tenant}",
            [AccountIn(**({"name": "F", "model_id": MODEL[tenant]} | a)) for a in accounts],
        )


async def set_status(db: Database, account_id: str, status: str) -> None:
    async with db.sessions() as s:
        await s.execute(
            text("UPDATE accounts SET status = :s WHERE account_id = :a"),
            {"s": status, "a": account_id},
        )
        await s.commit()


async def proposal_rows(db: Database, events: list[Envelope]) -> dict[str, dict[str, Any]]:
    """Each event's recorded proposal, by account id."""
    ids = [e.payload["proposal_id"] for e in events]
    async with db.sessions() as s:
        rows = await s.execute(
            text("SELECT * FROM proposals WHERE proposal_id = ANY(:ids)"), {"ids": ids}
        )
        return {r.account_id: dict(r._mapping) for r in rows}


async def account_status(db: Database, account_id: str) -> str:
    async with db.sessions() as s:
        row = await s.execute(
            text("SELECT status FROM accounts WHERE account_id = :a"), {"a": account_id}
        )
        return str(row.scalar_one())


async def audit_records(db: Database, tenant: str, subject_type: str, subject_id: str) -> list:
    async with db.sessions() as s:
        return await audit.read(
            s,
            tenant,
            subject_type=subject_type,
            subject_id=subject_id,
            after=None,
            limit=100,
            offset=0,
        )


# --- the book -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    models = [(t, name) for t, m in MODEL.items() for name in (m, f"{m}-2")]
    await remember_models(database, models)
    await open_accounts(
        database,
        SELECTING,
        [
            {
                "account_id": "FL-1",
                "household_id": "FLH-1",
                "advisor_id": "adv-1",
                "attributes": {"discretionary": True, "client_tier": "platinum", "aum": 2500000},
            },
            {
                "account_id": "FL-2",
                "household_id": "FLH-1",
                "account_type": "ira",
                "model_id": "fl-core-2",
                "advisor_id": "adv-2",
                "auto_approve": False,
                "attributes": {"discretionary": False, "client_tier": "gold", "aum": 400000},
            },
            {"account_id": "FL-3", "household_id": "FLH-2", "attributes": {"client_tier": "gold"}},
            {
                "account_id": "FL-4",
                "household_id": "FLH-2",
                "advisor_id": "adv-1",
                "attributes": {"aum": "n/a"},
            },
        ],
    )
    await set_status(database, "FL-3", "suspended")
    await open_accounts(
        database,
        OTHER,
        [
            {
                "account_id": "FL-B1",
                "household_id": "FLH-B",
                "advisor_id": "adv-1",
                "attributes": {"client_tier": "platinum"},
            }
        ],
    )
    # FL-1's latest proposal is its second; FL-3 has none
    for batch in (
        [
            proposed(
                "FL-1",
                SELECTING,
                [trade("buy", "9000")],
                with_metrics=metrics(turnover="50", buy="9000"),
            )
        ],
        [
            proposed(
                "FL-1",
                SELECTING,
                [trade("buy", "5000"), trade("sell", "3000", "120.50")],
                with_metrics=metrics(
                    turnover="4", tax="120.50", drift="3.5", buy="5000", sell="3000"
                ),
            ),
            proposed("FL-2", SELECTING),
            proposed(
                "FL-4",
                SELECTING,
                [trade("sell", "600", "-200")],
                cash_before="500",
                with_metrics=metrics(
                    account_value="50000", turnover="30", tax="-200", drift="12", sell="600"
                ),
            ),
        ],
    ):
        assert (await consume(database, *batch))["dead_lettered"] == 0
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, tenant=ROUTING) as http:
        yield http


# --- conditions to SQL --------------------------------------------------------------------------


def c(field: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


SELECTIONS: list[tuple[list[dict[str, Any]], set[str]]] = [
    ([], {"FL-1", "FL-2", "FL-3", "FL-4"}),
    ([c("status", "eq", "active")], {"FL-1", "FL-2", "FL-4"}),
    ([c("status", "ne", "active")], {"FL-3"}),
    ([c("status", "in", ["suspended", "closed"])], {"FL-3"}),
    ([c("status", "not_in", ["active"])], {"FL-3"}),
    ([c("account_type", "eq", "ira")], {"FL-2"}),
    ([c("household_id", "eq", "FLH-2")], {"FL-3", "FL-4"}),
    ([c("model_id", "eq", "fl-core")], {"FL-1", "FL-3", "FL-4"}),
    ([c("model_id", "not_exists")], set()),
    ([c("advisor_id", "eq", "adv-1")], {"FL-1", "FL-4"}),
    ([c("advisor_id", "ne", "adv-1")], {"FL-2", "FL-3"}),  # no advisor is "not adv-1"
    ([c("advisor_id", "in", ["adv-2"])], {"FL-2"}),
    ([c("advisor_id", "not_in", ["adv-1"])], {"FL-2", "FL-3"}),
    ([c("advisor_id", "not_exists")], {"FL-3"}),
    ([c("auto_approve", "eq", False)], {"FL-2"}),
    ([c("auto_approve", "ne", True)], {"FL-2"}),
    ([c("attribute.discretionary", "eq", True)], {"FL-1"}),
    ([c("attribute.discretionary", "ne", True)], {"FL-2", "FL-3", "FL-4"}),
    ([c("attribute.client_tier", "in", ["platinum", "gold"])], {"FL-1", "FL-2", "FL-3"}),
    ([c("attribute.client_tier", "not_in", ["gold"])], {"FL-1", "FL-4"}),
    ([c("attribute.aum", "gt", "1000000")], {"FL-1"}),  # FL-4's text "n/a" is no number
    ([c("attribute.aum", "lte", 400000)], {"FL-2"}),
    ([c("attribute.aum", "eq", 400000)], {"FL-2"}),
    ([c("attribute.aum", "exists")], {"FL-1", "FL-2", "FL-4"}),
    ([c("attribute.aum", "not_exists")], {"FL-3"}),
    ([c("attribute.client_tier", "eq", "platinum"), c("status", "eq", "active")], {"FL-1"}),
    ([c("proposal.status", "eq", "approved")], {"FL-1", "FL-4"}),
    ([c("proposal.status", "eq", "pending")], {"FL-2"}),
    ([c("proposal.status", "ne", "approved")], {"FL-2", "FL-3"}),
    ([c("proposal.status", "exists")], {"FL-1", "FL-2", "FL-4"}),
    ([c("proposal.status", "not_exists")], {"FL-3"}),
    ([c("proposal.turnover_percent", "gt", "10")], {"FL-4"}),  # FL-1's latest is 4%
    ([c("proposal.turnover_percent", "lte", 4)], {"FL-1"}),
    ([c("proposal.turnover_percent", "not_exists")], {"FL-2", "FL-3"}),
    ([c("proposal.estimated_tax", "lt", "0")], {"FL-4"}),
    ([c("proposal.estimated_tax", "gte", "120.5")], {"FL-1"}),
    ([c("proposal.estimated_tax", "eq", 0)], {"FL-2"}),  # from its trades: no sells
    ([c("proposal.account_value", "gte", "100000")], {"FL-1"}),
    ([c("proposal.cash_before", "eq", "1000.00")], {"FL-1", "FL-2"}),
    ([c("proposal.drift_percent", "gt", "10")], {"FL-4"}),
    ([c("proposal.trade_count", "eq", 2)], {"FL-1"}),
    ([c("proposal.trade_count", "lt", 2)], {"FL-2", "FL-4"}),
    ([c("proposal.trade_value", "gt", 1000)], {"FL-1"}),
    ([c("proposal.trade_value", "lte", "800")], {"FL-2", "FL-4"}),
]


@pytest.mark.parametrize(
    ("conditions", "expected"),
    SELECTIONS,
    ids=[" & ".join(f"{x['field']} {x['op']}" for x in s) or "none" for s, _ in SELECTIONS],
)
async def test_conditions_select_accounts_by_the_account_and_its_latest_proposal(
    db, conditions, expected
):
    parsed = [Condition.model_validate(x) for x in conditions]
    assert validate_conditions(parsed, "conditions") == []
    selected = filters_repository.accounts_selected(SELECTING, parsed)
    async with db.sessions() as s:
        ids = set((await s.execute(selected)).scalars())
        # as a subquery of a query on accounts (how bulk changes use it)
        outer = select(Account.account_id).where(col(Account.account_id).in_(selected))
        outer_ids = set((await s.exec(outer)).all())
    assert ids == expected
    assert outer_ids == expected


async def test_conditions_compile_to_bound_parameters_only(db):
    hostile = "x'; DROP TABLE accounts; --"
    selected = filters_repository.accounts_selected(
        SELECTING,
        [
            Condition(field="advisor_id", op="eq", value=hostile),
            Condition(field="attribute.client_tier", op="in", value=[hostile]),
        ],
    )
    sql = str(selected.compile())
    assert hostile not in sql and "DROP" not in sql
    async with db.sessions() as s:
        assert list((await s.execute(selected)).scalars()) == []


async def test_a_proposal_with_metrics_keeps_them_and_one_without_has_its_trades_figures(db):
    async with db.sessions() as s:
        rows = await s.execute(
            text(
                "SELECT DISTINCT ON (account_id) account_id, account_value, cash_before, "
                "buy_value, sell_value, turnover_percent, estimated_tax, drift_before_percent "
                "FROM proposals WHERE account_id IN ('FL-1', 'FL-2') "
                "ORDER BY account_id, received_at DESC"
            )
        )
        by_account = {r[0]: tuple(r[1:]) for r in rows}
    d = Decimal
    assert by_account["FL-1"] == (
        d("100000"),
        d("1000"),
        d("5000"),
        d("3000"),
        d("4"),
        d("120.5"),
        d("3.5"),
    )
    assert by_account["FL-2"] == (None, d("1000"), d("800"), d("0"), None, d("0"), None)


# --- validation ---------------------------------------------------------------------------------

INVALID: list[tuple[dict[str, Any], str, str]] = [
    (c("colour", "eq", "red"), "conditions[0].field", "unknown field colour"),
    (c("attribute.Client-Tier", "eq", "x"), "conditions[0].field", "attribute name"),
    (c("auto_approve", "gt", True), "conditions[0].op", "gt is not an operator for auto_approve"),
    (c("household_id", "exists"), "conditions[0].op", "exists is not an operator"),
    (c("status", "eq", "asleep"), "conditions[0].value", "asleep is not one of active"),
    (c("status", "in", "active"), "conditions[0].value", "non-empty list"),
    (c("status", "in", []), "conditions[0].value", "non-empty list"),
    (c("proposal.turnover_percent", "gt", 20.5), "conditions[0].value", "decimal string"),
    (c("proposal.turnover_percent", "gt", "twenty"), "conditions[0].value", "decimal string"),
    (c("proposal.trade_count", "gt", "2.5"), "conditions[0].value", "whole number"),
    (c("auto_approve", "eq", "yes"), "conditions[0].value", "true or false"),
    (c("advisor_id", "exists", "adv-1"), "conditions[0].value", "exists takes no value"),
    (c("attribute.aum", "gt", "lots"), "conditions[0].value", "gt compares numbers"),
    (c("attribute.tier", "eq", {"a": 1}), "conditions[0].value", "expected text"),
]


@pytest.mark.parametrize(("condition", "field", "message"), INVALID, ids=[i[2] for i in INVALID])
def test_an_invalid_condition_is_named_by_its_field(condition, field, message):
    problems = validate_conditions([Condition.model_validate(condition)], "conditions")
    assert [p.field for p in problems] == [field]
    assert message in problems[0].message


async def test_an_invalid_filter_is_a_422_naming_the_condition_and_nothing_is_stored(api):
    body = {
        "name": "bad",
        "action": "review",
        "conditions": [c("status", "eq", "active"), c("proposal.estimated_tax", "lt", 1.5)],
    }
    response = await api.put("/filters/fr-bad", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["conditions[1].value"]
    assert (await api.get("/filters/fr-bad")).status_code == 404
    response = await api.put("/filters/fr-bad", json={"name": "bad", "action": "archive"})
    assert response.status_code == 422
    assert "action" in response.json()["errors"][0]["field"]


# --- accounts' advisor and attributes -----------------------------------------------------------


async def test_accounts_carry_an_advisor_and_attributes_changed_with_history(db):
    async with api_client(spec, db, tenant=OTHER) as http:
        body = {
            "account_id": "FL-B2",
            "household_id": "FLH-B",
            "name": "B2",
            "model_id": MODEL[OTHER],
            "advisor_id": "adv-9",
            "attributes": {"client_tier": "gold", "aum": 1200, "discretionary": True},
        }
        opened = await http.post("/accounts", json=body)
        assert opened.status_code == 201, opened.text
        assert opened.json()["advisor_id"] == "adv-9"
        assert opened.json()["attributes"] == body["attributes"]
        patch = {"advisor_id": None, "attributes": {"client_tier": "platinum"}}
        changed = await http.patch("/accounts/FL-B2", json=patch)
        assert changed.status_code == 200, changed.text
        assert changed.json()["advisor_id"] is None
        assert changed.json()["attributes"] == {"client_tier": "platinum"}
        for bad, field in (
            ({"attributes": {"Tier": "x"}}, "attributes"),
            ({"attributes": {"tier": {"nested": 1}}}, "attributes"),
            ({"attributes": {f"k{i}": i for i in range(51)}}, "attributes"),
            ({"attributes": None}, "attributes"),
        ):
            response = await http.patch("/accounts/FL-B2", json=bad)
            assert response.status_code == 422, bad
            assert response.json()["errors"][0]["field"].startswith(field), response.json()
    records = await audit_records(db, OTHER, "account", "FL-B2")
    change = records[-1]
    assert change.action == "change"
    assert change.before["advisor_id"] == "adv-9"
    assert change.before["attributes"]["client_tier"] == "gold"
    assert change.after["advisor_id"] is None
    assert change.after["attributes"] == {"client_tier": "platinum"}


# --- routing ------------------------------------------------------------------------------------


ROUTING_FILTERS = [
    (
        "fr-watch",
        {
            "name": "Watch list",
            "action": "suspend",
            "conditions": [c("attribute.watch", "eq", True)],
        },
    ),
    (
        "fr-turnover",
        {
            "name": "Large turnover",
            "action": "review",
            "conditions": [c("proposal.turnover_percent", "gt", "20")],
        },
    ),
    (
        "fr-small",
        {
            "name": "Small trades",
            "action": "trade",
            "conditions": [c("proposal.trade_value", "lt", "1000")],
        },
    ),
    ("fr-off", {"name": "Everything", "action": "review", "conditions": [], "enabled": False}),
]


@pytest.fixture(scope="module")
async def routed(db) -> dict[str, Envelope]:
    """tenant flt-r's filters, and a batch routed by them (with one proposal for an unknown
    account, so the consumer redoes the batch one by one)."""
    async with api_client(spec, db, tenant=ROUTING) as http:
        for filter_id, body in ROUTING_FILTERS:
            response = await http.put(f"/filters/{filter_id}", json=body)
            assert response.status_code in (200, 201), response.text
    watched = {"watch": True}
    await open_accounts(
        db,
        ROUTING,
        [
            {"account_id": "FR-SMALL", "household_id": "FRH", "auto_approve": False},
            {"account_id": "FR-BIG", "household_id": "FRH"},
            {"account_id": "FR-WATCHED", "household_id": "FRH", "attributes": watched},
            {"account_id": "FR-PLAIN", "household_id": "FRH"},
            {"account_id": "FR-BOTH", "household_id": "FRH", "attributes": watched},
            {"account_id": "FR-LATER", "household_id": "FRH", "attributes": watched},
        ],
    )
    big = metrics(turnover="25", buy="5000")
    events = {
        "FR-SMALL": proposed("FR-SMALL", ROUTING),  # 800 of trades
        "FR-BIG": proposed("FR-BIG", ROUTING, [trade("buy", "5000")], with_metrics=big),
        "FR-WATCHED": proposed("FR-WATCHED", ROUTING),
        "FR-PLAIN": proposed("FR-PLAIN", ROUTING, [trade("buy", "5000")]),
        "FR-BOTH": proposed("FR-BOTH", ROUTING, [trade("buy", "5000")], with_metrics=big),
        "FR-GHOST": proposed("FR-GHOST", ROUTING),
    }
    outcome = await consume(db, *events.values())
    assert outcome == {"processed": 5, "duplicate": 0, "dead_lettered": 1}
    return events


async def test_each_proposal_is_decided_by_the_first_enabled_filter_that_selects_it(db, routed):
    rows = await proposal_rows(db, list(routed.values()))
    assert "FR-GHOST" not in rows  # the dead letter, alone
    decided = {
        a: (r["status"], r["routed_by"], r["routing_action"], r["decided_by"], r["decision_note"])
        for a, r in rows.items()
    }
    assert decided == {
        "FR-SMALL": (
            "approved",
            "filter:fr-small@1",
            "trade",
            "filter:fr-small",
            "approved by filter Small trades",
        ),
        "FR-BIG": (
            "pending",
            "filter:fr-turnover@1",
            "review",
            None,
            "held for review by filter Large turnover",
        ),
        "FR-WATCHED": (
            "pending",
            "filter:fr-watch@1",
            "suspend",
            None,
            "held: account suspended by filter Watch list",
        ),
        "FR-PLAIN": (
            "approved",
            "auto_approve",
            "auto_approve",
            service.AUTO_APPROVER,
            service.AUTO_APPROVAL_NOTE,
        ),
        "FR-BOTH": (  # watch (first) and large turnover both select it: the first decides
            "pending",
            "filter:fr-watch@1",
            "suspend",
            None,
            "held: account suspended by filter Watch list",
        ),
    }
    approved = {
        d.payload.account_id: d
        for d in await outbox_events(db, "trades-approved")
        if d.payload.account_id.startswith("FR-")
    }
    assert set(approved) == {"FR-SMALL", "FR-PLAIN"}
    assert approved["FR-SMALL"].payload.approved_by == "filter:fr-small"
    assert approved["FR-SMALL"].envelope.causation_id == routed["FR-SMALL"].id
    held = await audit_records(db, ROUTING, "proposal", routed["FR-BIG"].payload["proposal_id"])
    assert [(r.actor, r.action) for r in held] == [("filter:fr-turnover", "hold")]
    assert held[0].after["routed_by"] == "filter:fr-turnover@1"


async def test_a_suspending_filter_suspends_the_account_announced_and_audited(db, routed):
    for account_id in ("FR-WATCHED", "FR-BOTH"):
        assert await account_status(db, account_id) == "suspended"
        changed = await outbox_events(db, "account-changed", account_id)
        assert changed[-1].payload.status == "suspended"
        # the suspension follows from the proposal the filter held (one trace)
        assert changed[-1].envelope.causation_id == routed[account_id].id
        records = await audit_records(db, ROUTING, "account", account_id)
        assert (records[-1].actor, records[-1].action) == ("filter:fr-watch", "suspend")
        assert (records[-1].before["status"], records[-1].after["status"]) == (
            "active",
            "suspended",
        )
    assert await account_status(db, "FR-LATER") == "active"  # no proposal yet


async def test_a_suspension_follows_from_its_proposal_in_a_whole_batch(db):
    """Routed as one batch (no record redone alone), each suspended account's account-changed
    still follows from its own proposal."""
    tenant = SUSPENDING
    async with api_client(spec, db, tenant=tenant) as http:
        body = {
            "name": "Watch",
            "action": "suspend",
            "conditions": [c("attribute.watch", "eq", True)],
        }
        assert (await http.put("/filters/fs-watch", json=body)).status_code in (200, 201)
    watched = {"watch": True}
    await open_accounts(
        db,
        tenant,
        [
            {"account_id": "FS-1", "household_id": "FSH", "attributes": watched},
            {"account_id": "FS-2", "household_id": "FSH", "attributes": watched},
        ],
    )
    events = {a: proposed(a, tenant) for a in ("FS-1", "FS-2")}
    assert await consume(db, *events.values()) == {
        "processed": 2,
        "duplicate": 0,
        "dead_lettered": 0,
    }
    for account_id, cause in events.items():
        [changed] = [
            d
            for d in await outbox_events(db, "account-changed", account_id)
            if d.payload.status == "suspended"
        ]
        assert changed.envelope.causation_id == cause.id


async def test_the_held_proposals_are_listed_and_filters_in_their_order(api, routed):
    held = (await api.get("/proposals", params={"held": "true"})).json()["items"]
    assert {p["account_id"] for p in held} == {"FR-BIG", "FR-WATCHED", "FR-BOTH"}
    by_filter = await api.get("/proposals", params={"routed_by": "filter:fr-turnover@1"})
    [big] = by_filter.json()["items"]
    assert big["account_id"] == "FR-BIG" and big["routing_action"] == "review"
    assert Decimal(big["turnover_percent"]) == Decimal("25")
    listed = (await api.get("/filters")).json()["items"]
    assert [f["filter_id"] for f in listed] == [f for f, _ in ROUTING_FILTERS]
    assert [f["position"] for f in listed] == [0, 1, 2, 3]
    page = await api.get("/filters/fr-watch/accounts", params={"limit": 1})
    assert page.status_code == 200
    assert page.json()["total"] == 3 and page.json()["next_offset"] == 1
    assert [a["account_id"] for a in page.json()["items"]] == ["FR-BOTH"]


async def test_the_order_decides_and_a_changed_filter_has_a_new_version(db, api, routed):
    order = ["fr-turnover", "fr-watch", "fr-small", "fr-off"]
    response = await api.put("/filters/order", json={"filter_ids": order})
    assert response.status_code == 200, response.text
    assert [f["filter_id"] for f in response.json()] == order
    bad = await api.put("/filters/order", json={"filter_ids": ["fr-watch", "fr-watch", "nope"]})
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == [
        "filter_ids[1]",
        "filter_ids[2]",
        "filter_ids",
    ]
    body = dict(ROUTING_FILTERS[1][1], name="Large turnover (20%)")
    changed = await api.put("/filters/fr-turnover", json=body)
    assert changed.json()["version"] == 2 and changed.json()["position"] == 0
    later = proposed(
        "FR-LATER", ROUTING, [trade("buy", "5000")], with_metrics=metrics(turnover="25")
    )
    assert (await consume(db, later))["processed"] == 1
    row = (await proposal_rows(db, [later]))["FR-LATER"]
    assert (row["status"], row["routed_by"]) == ("pending", "filter:fr-turnover@2")
    assert await account_status(db, "FR-LATER") == "active"  # reviewed, not suspended
    history = await audit_records(db, ROUTING, "filter", "fr-turnover")
    assert [r.action for r in history] == ["create", "update"]
    assert history[1].before["version"] == 1 and history[1].after["version"] == 2
    # back as it was, for the other tests
    restore = await api.put("/filters/order", json={"filter_ids": [f for f, _ in ROUTING_FILTERS]})
    assert restore.status_code == 200


async def test_bulk_approval_by_ids_approves_the_pending_and_says_why_not_the_others(
    db, api, routed
):
    ids = {a: e.payload["proposal_id"] for a, e in routed.items()}
    body = {
        "proposal_ids": [ids["FR-BIG"], ids["FR-SMALL"], ids["FR-WATCHED"], str(uuid.uuid4())],
        "note": "looked at it",
    }
    async with api_client(spec, db, tenant=ROUTING, roles=(Role.ADVISOR,)) as advisor:
        assert (await advisor.post("/proposals/approve", json=body)).status_code == 403
    response = await api.post("/proposals/approve", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["approved"] == 1
    assert {s["proposal_id"]: s["reason"] for s in result["skipped"]} == {
        ids["FR-SMALL"]: "proposal is approved",
        ids["FR-WATCHED"]: "account is suspended: trades cannot go out",
        body["proposal_ids"][3]: "no such proposal",
    }
    row = (await proposal_rows(db, [routed["FR-BIG"]]))["FR-BIG"]
    assert (row["status"], row["decided_by"], row["decision_note"]) == (
        "approved",
        "admin@flt-r",
        "looked at it",
    )
    [announced] = await outbox_events(db, "trades-approved", "FR-BIG")
    assert announced.envelope.causation_id == routed["FR-BIG"].id
    assert announced.payload.approved_by == "admin@flt-r"
    [record] = [
        r
        for r in await audit_records(db, ROUTING, "proposal", ids["FR-BIG"])
        if r.action == "approve"
    ]
    assert record.before["status"] == "pending" and record.after["status"] == "approved"
    assert record.after["routed_by"] == "filter:fr-turnover@1"


async def test_bulk_approval_by_filter_approves_the_latest_pending_of_its_active_accounts(
    db, api, routed
):
    await open_accounts(db, ROUTING, [{"account_id": "FR-BULK", "household_id": "FRH"}])
    event = proposed("FR-BULK", ROUTING, [trade("buy", "5000")], with_metrics=metrics("1", "40"))
    assert (await consume(db, event))["processed"] == 1
    response = await api.post("/proposals/approve", json={"filter_id": "fr-turnover"})
    assert response.status_code == 200, response.text
    result = response.json()
    # FR-BOTH's account is suspended; FR-BIG's was approved by the test before (if run)
    assert result["approved"] >= 1
    skipped = {s["proposal_id"]: s["reason"] for s in result["skipped"]}
    both = routed["FR-BOTH"].payload["proposal_id"]
    assert skipped == {both: "account is suspended: trades cannot go out"}
    assert (await proposal_rows(db, [event]))["FR-BULK"]["status"] == "approved"
    assert len(await outbox_events(db, "trades-approved", "FR-BULK")) == 1
    again = await api.post("/proposals/approve", json={"filter_id": "fr-turnover"})
    assert again.json()["approved"] == 0
    neither = await api.post("/proposals/approve", json={})
    assert neither.status_code == 422
    both_given = await api.post(
        "/proposals/approve", json={"filter_id": "fr-turnover", "proposal_ids": [both]}
    )
    assert both_given.status_code == 422


# --- tenants ------------------------------------------------------------------------------------


async def test_another_tenant_sees_no_filter_and_is_not_routed_by_them(db, routed):
    async with api_client(spec, db, tenant=OTHER) as other:
        assert (await other.get("/filters")).json()["items"] == []
        assert (await other.get("/filters/fr-watch")).status_code == 404
        assert (await other.get("/filters/fr-watch/accounts")).status_code == 404
        assert (await other.delete("/filters/fr-watch")).status_code == 404
        ids = [e.payload["proposal_id"] for e in routed.values()]
        response = await other.post("/proposals/approve", json={"proposal_ids": ids})
        assert response.json()["approved"] == 0
        assert {s["reason"] for s in response.json()["skipped"]} == {"no such proposal"}
        response = await other.post("/proposals/approve", json={"filter_id": "fr-turnover"})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "filter_id"
    # flt-b's large-turnover proposal is not held by flt-r's filter
    event = proposed("FL-B1", OTHER, [trade("buy", "5000")], with_metrics=metrics(turnover="90"))
    assert (await consume(db, event))["processed"] == 1
    row = (await proposal_rows(db, [event]))["FL-B1"]
    assert (row["status"], row["routed_by"]) == ("approved", "auto_approve")


async def test_a_deleted_filter_routes_nothing_and_keeps_its_history(db, api, routed):
    body = {"name": "Temporary", "action": "review", "conditions": [c("household_id", "eq", "X")]}
    assert (await api.put("/filters/fr-temp", json=body)).status_code in (200, 201)
    assert (await api.delete("/filters/fr-temp")).status_code == 204
    assert (await api.get("/filters/fr-temp")).status_code == 404
    history = await audit_records(db, ROUTING, "filter", "fr-temp")
    assert [(r.action, r.after is None) for r in history] == [("create", False), ("delete", True)]


async def test_a_batch_is_routed_by_one_statement_whatever_its_filters(db, routed):
    await open_accounts(
        db,
        ROUTING,
        [{"account_id": f"FR-MANY-{i}", "household_id": "FRH"} for i in range(12)],
    )
    batch = [
        proposed(f"FR-MANY-{i}", ROUTING, [trade("buy", "5000")], with_metrics=metrics(buy="5000"))
        for i in range(12)
    ]
    statements: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    try:
        assert (await consume(db, *batch))["processed"] == 12
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", note)
    assert len([q for q in statements if "CASE WHEN" in q]) == 1
    assert len([q for q in statements if q.startswith("INSERT INTO proposals")]) == 1
    assert len([q for q in statements if "FROM filters" in q]) == 1
    rows = await proposal_rows(db, batch)
    assert {r["routed_by"] for r in rows.values()} == {"auto_approve"}
