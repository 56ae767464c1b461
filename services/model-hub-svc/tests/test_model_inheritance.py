"""Parent-child models (issue 13, item 4) on real PostgreSQL: a child stores its overrides and
answers its effective targets; a child outside its parent's customization limits is refused
naming the limit; a new parent version gives each child whose effective targets change one
new version and one model-changed (none for a child it leaves as it was), cascading to
grandchildren; a child the new version breaks keeps its version and is reported; cycles are
refused; 1,000 children are made and cascaded in a number of statements that does not grow
with them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.bulk import driver_connection
from ballast_common.contracts.events import CorporateActionRecordedV1
from ballast_common.db import Database
from ballast_common.testing import api_client, migrated_database, outbox_events, unit_of_work
from model_hub_svc import service
from model_hub_svc.main import spec
from model_hub_svc.repository import PostgresModelHubRepository
from model_hub_svc.schemas import ModelIn, OverridesIn, ReweightIn
from sqlalchemy import event, text

pytestmark = pytest.mark.integration

TENANT = "demo"  # api_client's tenant
PRICES = {"INA": "100", "INB": "50", "INC": "20", "IND": "10", "INE": "5", "INF": "1"}


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db) as client:
        securities = [
            {"symbol": s, "name": s, "asset_class": "US Equity", "sector": "X", "price": p}
            for s, p in PRICES.items()
        ]
        assert (await client.put("/securities", json={"securities": securities})).is_success
        yield client


def new_id(prefix: str = "inh") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def weights(**given: str) -> list[dict[str, str]]:
    return [{"symbol": s, "weight": w} for s, w in given.items()]


PARENT: dict[str, Any] = {
    "name": "Parent",
    "targets": weights(INA="0.5", INB="0.3", INC="0.2"),
    "limits": {
        "max_reweight_points": "2",
        "max_added": 1,
        "may_remove": True,
        "locked": ["INA"],
        "allowed_additions": ["IND", "INE"],
    },
}


async def put(api: httpx.AsyncClient, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.put(f"/models/{model_id}", json=body)
    assert response.is_success, response.text
    answer: dict[str, Any] = response.json()
    return answer


def child(parent_id: str, **overrides: Any) -> dict[str, Any]:
    return {"name": "Child", "parent_model_id": parent_id, "overrides": overrides}


def effective(model: dict[str, Any]) -> dict[str, Decimal]:
    return {t["symbol"]: Decimal(t["weight"]) for t in model["targets"]}


async def test_a_child_stores_its_overrides_and_answers_its_effective_targets(api, db):
    parent_id, child_id = new_id(), new_id()
    await put(api, parent_id, PARENT)
    made = await put(
        api,
        child_id,
        child(
            parent_id,
            remove=["INC"],
            reweight=[{"symbol": "INB", "weight": "0.31"}],
            add=[{"symbol": "IND", "weight": "0.1", "band": {"width": "0.01"}}],
        ),
    )
    # INC's 0.2 is freed, INB takes 0.01 more and IND 0.1: INA (untouched) gets the 0.09 left
    assert effective(made) == {
        "INA": Decimal("0.59"),
        "INB": Decimal("0.31"),
        "IND": Decimal("0.1"),
    }
    assert sum(effective(made).values()) == 1
    got = (await api.get(f"/models/{child_id}")).json()
    assert got["parent"] == {"model_id": parent_id, "version": 1}
    assert got["overrides"]["remove"] == ["INC"]
    assert got["overrides"]["reweight"] == [{"symbol": "INB", "weight": "0.31"}]
    assert {t["symbol"]: t["band"] for t in got["targets"]}["IND"]["width"] == "0.01000000"
    [event] = await outbox_events(db, "model-changed", child_id)
    assert event.payload.parent is not None and event.payload.parent.model_id == parent_id
    assert {t.symbol: t.weight for t in event.payload.targets} == effective(made)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"reweight": [{"symbol": "INB", "weight": "0.34"}]},
            "overrides.reweight[0].weight",
            "reweights INB by 4.0 points; the parent allows 2.0",
        ),
        (
            {"reweight": [{"symbol": "INA", "weight": "0.51"}]},
            "overrides.reweight[0].weight",
            "reweights INA, which the parent locks",
        ),
        ({"remove": ["INA"]}, "overrides.remove[0]", "removes INA, which the parent locks"),
        (
            {"add": [{"symbol": "IND", "weight": "0.05"}, {"symbol": "INE", "weight": "0.05"}]},
            "overrides.add",
            "adds 2 securities; the parent allows 1",
        ),
        (
            {"add": [{"symbol": "INF", "weight": "0.05"}]},
            "overrides.add[0].symbol",
            "adds INF, which is not among the parent's allowed additions (IND, INE)",
        ),
        ({"remove": ["IND"]}, "overrides.remove[0]", "the parent has no target IND"),
        (
            {"add": [{"symbol": "INB", "weight": "0.05"}]},
            "overrides.add[0].symbol",
            "the parent holds INB already: reweight it instead",
        ),
        (
            {
                "reweight": [{"symbol": "INB", "weight": "0.31"}],
                "add": [{"symbol": "IND", "weight": "1"}],
            },
            "overrides",
            "the overrides take 101.0 points more than they free, and the untouched inherited "
            "targets hold 70.0",
        ),
        (
            {"add": [{"symbol": "IND", "weight": "0.1", "replacement": "INE"}]},
            "overrides.add[0].replacement",
            "set hold",
        ),
    ],
)
async def test_a_child_outside_the_limits_is_refused_naming_the_limit(
    api, db, overrides, field, message
):
    parent_id, child_id = new_id(), new_id()
    await put(api, parent_id, PARENT)
    response = await api.put(f"/models/{child_id}", json=child(parent_id, **overrides))
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert response.json()["errors"][0]["field"] == field
    assert (await api.get(f"/models/{child_id}")).status_code == 404
    assert await outbox_events(db, "model-changed", child_id) == []


async def test_removals_are_refused_when_the_parent_allows_none(api):
    parent_id = new_id()
    await put(api, parent_id, {**PARENT, "limits": {"may_remove": False}})
    response = await api.put(f"/models/{new_id()}", json=child(parent_id, remove=["INB"]))
    assert response.status_code == 422
    assert response.json()["detail"] == "removes INB; the parent allows no removals"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"targets": weights(INA="1")}, "targets", "not targets"),
        ({"kind": "shares"}, "kind", "kind must be weights"),
        ({"parent_model_id": "no-such-model"}, "parent_model_id", "no model no-such-model"),
    ],
)
async def test_a_child_must_name_a_known_parent_and_take_overrides(api, body, field, message):
    parent_id = new_id()
    await put(api, parent_id, PARENT)
    response = await api.put(f"/models/{new_id()}", json={**child(parent_id), **body})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert response.json()["errors"][0]["field"] == field


async def test_a_parents_limits_name_its_own_targets_and_known_securities(api):
    body = {**PARENT, "limits": {"locked": ["IND"], "allowed_additions": ["NOPE"]}}
    response = await api.put(f"/models/{new_id()}", json=body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [
        "limits.locked[0]",
        "limits.allowed_additions[0]",
    ]


async def test_cycles_are_refused(api):
    top, middle, bottom = new_id(), new_id(), new_id()
    await put(api, top, PARENT)
    await put(api, middle, child(top))
    await put(api, bottom, child(middle))
    for model_id, parent_id in ((top, bottom), (top, middle), (middle, middle)):
        response = await api.put(f"/models/{model_id}", json=child(parent_id))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "parent_model_id"
        assert "a cycle" in response.json()["detail"]
    assert (await api.get(f"/models/{top}")).json()["parent"] is None


async def test_a_new_parent_version_changes_the_children_it_affects_once_each(api, db):
    parent_id, moved, unaffected, grandchild = new_id(), new_id(), new_id(), new_id()
    await put(api, parent_id, {**PARENT, "limits": None})
    await put(api, moved, child(parent_id, reweight=[{"symbol": "INA", "weight": "0.45"}]))
    # INB and INC removed: INA holds everything, whatever the parent gives INB and INC
    await put(api, unaffected, child(parent_id, remove=["INB", "INC"]))
    await put(api, grandchild, child(moved, remove=["INC"]))
    changed = await put(
        api, parent_id, {"name": "Parent", "targets": weights(INA="0.5", INB="0.2", INC="0.3")}
    )
    assert (changed["version"], changed["children_outside_limits"]) == (2, [])
    assert sorted(changed["children_changed"]) == sorted([moved, grandchild])
    # INA stays at 0.45; INB and INC share the other 0.55 as 0.2 : 0.3
    moved_now = (await api.get(f"/models/{moved}")).json()
    assert (moved_now["version"], moved_now["parent"]["version"]) == (2, 2)
    assert effective(moved_now) == {
        "INA": Decimal("0.45"),
        "INB": Decimal("0.22"),
        "INC": Decimal("0.33"),
    }
    grand_now = (await api.get(f"/models/{grandchild}")).json()
    assert grand_now["parent"] == {"model_id": moved, "version": 2}
    assert effective(grand_now) == {"INA": Decimal("0.6716417910"), "INB": Decimal("0.3283582090")}
    assert (await api.get(f"/models/{unaffected}")).json()["version"] == 1
    events = {
        m: await outbox_events(db, "model-changed", m) for m in (moved, unaffected, grandchild)
    }
    assert [e.payload.version for e in events[moved]] == [1, 2]
    assert [e.payload.version for e in events[unaffected]] == [1]
    assert [e.payload.version for e in events[grandchild]] == [1, 2]
    assert events[moved][1].payload.parent.version == 2
    assert events[moved][1].payload.changed_by == events[grandchild][1].payload.changed_by
    audit = (await api.get(f"/models/{moved}/audit")).json()["items"]
    assert audit[-1]["before"]["targets"]["INB"] == "0.3300000000"
    assert audit[-1]["after"]["targets"]["INB"] == "0.2200000000"


async def test_a_child_the_new_parent_version_breaks_keeps_its_version_and_is_reported(api, db):
    parent_id, reweighted, removed = new_id(), new_id(), new_id()
    await put(api, parent_id, PARENT)
    await put(api, reweighted, child(parent_id, reweight=[{"symbol": "INB", "weight": "0.31"}]))
    await put(api, removed, child(parent_id, remove=["INC"]))
    tighter = {
        "name": "Parent",
        "targets": weights(INA="0.4", INB="0.4", INC="0.2"),
        "limits": {"max_reweight_points": "2", "may_remove": False},
    }
    answer = await put(api, parent_id, tighter)
    assert answer["children_changed"] == []
    assert {c["model_id"]: c["problem"] for c in answer["children_outside_limits"]} == {
        reweighted: "overrides.reweight[0].weight: reweights INB by 9.0 points; the parent "
        "allows 2.0",
        removed: "overrides.remove[0]: removes INC; the parent allows no removals",
    }
    for model_id in (reweighted, removed):
        assert (await api.get(f"/models/{model_id}")).json()["version"] == 1
        assert len(await outbox_events(db, "model-changed", model_id)) == 1
    # the manager fixes the child: it follows the parent's current version again
    fixed = await put(
        api, reweighted, child(parent_id, reweight=[{"symbol": "INB", "weight": "0.41"}])
    )
    assert (fixed["version"], fixed["parent"]) == (2, {"model_id": parent_id, "version": 2})


async def test_unchanged_overrides_on_an_unchanged_parent_make_no_version(api):
    parent_id, child_id = new_id(), new_id()
    await put(api, parent_id, PARENT)
    body = child(parent_id, remove=["INC"])
    await put(api, child_id, body)
    again = await api.put(f"/models/{child_id}", json=body)
    assert (again.status_code, again.json()["created"]) == (200, False)


# --- a thousand children -----------------------------------------------------------------------


async def _counting(db: Database, work: Callable[[Any, Any], Any]) -> tuple[Any, int]:
    """Run `work(uow, repo)` in a unit of work; the statements it sent to PostgreSQL: those
    of SQLAlchemy and those sent on the driver's connection itself (ballast_common.bulk)."""
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query)

    def log_sqlalchemy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", log_sqlalchemy)
    try:
        async with unit_of_work(db, "model-hub-svc") as uow:
            connection = await driver_connection(uow.session)
            connection.add_query_logger(log)
            try:
                result = await work(uow, PostgresModelHubRepository(uow.session))
            finally:
                connection.remove_query_logger(log)
    finally:
        event.remove(engine, "before_cursor_execute", log_sqlalchemy)
    return result, len(sent)


async def _family(db: Database, children: int) -> tuple[str, int, int]:
    """A parent and `children` children; (parent id, statements to make the children,
    statements of a parent change reaching every child)."""
    parent_id = new_id("bulk")
    parent = ModelIn.model_validate({"name": "Parent", "targets": weights(INA="0.5", INB="0.5")})
    async with unit_of_work(db, "model-hub-svc") as uow:
        await service.publish_model(
            uow, PostgresModelHubRepository(uow.session), TENANT, parent_id, parent, "pm", 1e-6
        )
    overrides = OverridesIn(reweight=[ReweightIn(symbol="INA", weight=Decimal("0.4"))])
    family = [(f"{parent_id}-{i}", f"Child {i}", overrides) for i in range(children)]
    made, creating = await _counting(
        db,
        lambda uow, repo: service.publish_children(uow, repo, TENANT, parent_id, family, "pm"),
    )
    assert made == children
    changed = ModelIn.model_validate({"name": "Parent", "targets": weights(INA="0.5", INC="0.5")})
    answer, cascading = await _counting(
        db,
        lambda uow, repo: service.publish_model(uow, repo, TENANT, parent_id, changed, "pm", 1e-6),
    )
    assert len(answer.children_changed) == children
    return parent_id, creating, cascading


async def test_a_thousand_children_take_as_many_statements_as_ten(api, db):
    await _family(db, 2)  # the driver's first use of a type asks the server about it
    _, creating_ten, cascading_ten = await _family(db, 10)
    parent_id, creating, cascading = await _family(db, 1000)
    assert creating_ten > 10 and cascading_ten > 10  # the statements are seen
    assert (creating, cascading) == (creating_ten, cascading_ten)
    async with db.sessions() as session:
        counts = (
            await session.execute(
                text(
                    "SELECT count(*) FILTER (WHERE v.version = 2), "
                    "count(*) FILTER (WHERE v.version = 2 AND v.parent_version = 2) "
                    "FROM model_versions v WHERE v.model_id LIKE :prefix"
                ),
                {"prefix": f"{parent_id}-%"},
            )
        ).one()
        events = await session.scalar(
            text("SELECT count(*) FROM outbox WHERE topic LIKE '%model-changed%' AND key LIKE :p"),
            {"p": f"{parent_id}-%"},
        )
    assert tuple(counts) == (1000, 1000)
    assert events == 2000  # each child's version 1 and 2
    [_, last] = await outbox_events(db, "model-changed", f"{parent_id}-999")
    assert {t.symbol: t.weight for t in last.payload.targets} == {
        "INA": Decimal("0.4"),
        "INC": Decimal("0.6"),
    }


# --- corporate actions -------------------------------------------------------------------------


async def _follow(db: Database, kind: str, symbol: str, **fields: Any) -> None:
    action = CorporateActionRecordedV1(
        action_id=new_id("CA"),
        type=kind,
        symbol=symbol,
        on=date(2026, 12, 7),
        accounts_affected=1,
        **fields,
    )
    async with unit_of_work(db, "model-hub-svc") as uow:
        await service.follow_corporate_action(uow, PostgresModelHubRepository(uow.session), action)


async def test_a_corporate_action_follows_parents_and_the_childrens_own_overrides(api, db):
    uid = uuid.uuid4().hex[:6].upper()
    a, b, z, renamed = f"A{uid}", f"B{uid}", f"Z{uid}", f"N{uid}"
    securities = [
        {"symbol": s, "name": s, "asset_class": "US Equity", "sector": "X", "price": "10"}
        for s in (a, b, z)
    ]
    assert (await api.put("/securities", json={"securities": securities})).is_success
    parent_id, child_id = new_id(), new_id()
    await put(api, parent_id, {"name": "P", "targets": [*weights(**{a: "0.5", b: "0.5"})]})
    await put(
        api,
        child_id,
        child(
            parent_id,
            reweight=[{"symbol": a, "weight": "0.4"}],
            add=[{"symbol": z, "weight": "0.1", "hold": True, "replacement": b}],
        ),
    )
    await _follow(db, "symbol-change", a, new_symbol=renamed)
    renamed_child = (await api.get(f"/models/{child_id}")).json()
    assert renamed_child["parent"]["version"] == 2
    assert renamed_child["overrides"]["reweight"] == [{"symbol": renamed, "weight": "0.4"}]
    assert effective(renamed_child) == {
        renamed: Decimal("0.4"),
        b: Decimal("0.5"),
        z: Decimal("0.1"),
    }
    await _follow(db, "cash-merger", z, cash_per_share=Decimal("12"))
    bought_out = (await api.get(f"/models/{child_id}")).json()
    assert bought_out["overrides"]["add"] == []
    assert effective(bought_out) == {renamed: Decimal("0.4"), b: Decimal("0.6")}
    versions = [e.payload.version for e in await outbox_events(db, "model-changed", child_id)]
    assert versions == [1, 2, 3]
