"""Account opening as a workflow on real PostgreSQL, over REST: an account opened `opening`
is suspended on the wire, its steps are marked (an exception is a task until done), its
automatic step follows the account (PATCH, strategy, a bulk change setting a model), the last
step done opens it in the same transaction (active, announced, audited `open`), a person
cannot make it active by hand, openings taking too long are tasks, and tenants are kept
apart. Tenants are opn-*, ids OPN- (the database is shared)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from account_svc import service
from account_svc.main import spec
from account_svc.repository import PostgresAccountRepository
from account_test_support import remember_models
from ballast_common.auth import Role
from ballast_common.db import Database
from ballast_common.testing import (
    api_client,
    bearer,
    delivery,
    example,
    migrated_database,
    outbox_events,
    unit_of_work,
)
from sqlalchemy import text

pytestmark = pytest.mark.integration

TENANT, OTHER = "opn-a", "opn-b"
MODEL = "opn-core"
MANUAL = ("paperwork", "funding", "compliance_review")


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    await remember_models(database, [(TENANT, MODEL), (OTHER, "opn-b-core")])
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, tenant=TENANT, roles=(Role.OVERLAY_MANAGER,)) as http:
        yield http


def new_id() -> str:
    return f"OPN-{uuid.uuid4().hex[:8].upper()}"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def problem(response: httpx.Response, status: int) -> list[tuple[str, str]]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return [(e["field"], e["message"]) for e in response.json()["errors"]]


async def open_as_workflow(
    api: httpx.AsyncClient, account_id: str | None = None, **fields: Any
) -> str:
    account_id = account_id or new_id()
    body = {
        "account_id": account_id,
        "household_id": f"OPNH-{account_id}",
        "name": "Opening",
        "model_id": MODEL,
        "status": "opening",
    } | fields
    opened = ok(await api.post("/accounts", json=body), 201)
    assert opened["status"] == "opening"
    return account_id


async def mark(
    api: httpx.AsyncClient, account_id: str, step: str, outcome: str = "done", note: Any = None
) -> httpx.Response:
    body: dict[str, Any] = {"outcome": outcome} | ({"note": note} if note is not None else {})
    return await api.post(f"/accounts/{account_id}/opening/steps/{step}", json=body)


async def published_statuses(db: Database, account_id: str) -> list[str]:
    """The status of each account-changed of the account, oldest first."""
    return [d.payload.status for d in await outbox_events(db, "account-changed", account_id)]


async def audited(db: Database, account_id: str) -> list[tuple[str, str]]:
    async with db.sessions() as s:
        rows = await s.execute(
            text(
                "SELECT actor, action FROM audit_records WHERE subject_type = 'account' "
                "AND subject_id = :a ORDER BY seq"
            ),
            {"a": account_id},
        )
        return [(r.actor, r.action) for r in rows]


# --- opening, and the wire --------------------------------------------------------------------


async def test_an_opening_account_is_suspended_on_the_wire_with_its_steps_pending(api, db):
    account_id = await open_as_workflow(api)
    assert ok(await api.get(f"/accounts/{account_id}"))["status"] == "opening"
    assert await published_statuses(db, account_id) == ["suspended"]
    opening = ok(await api.get(f"/accounts/{account_id}/opening"))
    assert opening["status"] == "opening"
    steps = {s["step"]: s for s in opening["steps"]}
    assert list(steps) == ["paperwork", "funding", "investment_profile", "compliance_review"]
    assert [steps[s]["status"] for s in MANUAL] == ["pending"] * 3
    profile = steps["investment_profile"]
    assert (profile["kind"], profile["status"]) == ("automatic", "done")
    assert profile["note"] == f"follows model {MODEL}"
    assert opening["missing"] == list(MANUAL)
    assert await audited(db, account_id) == [("overlay-manager@opn-a", "start-opening")]
    # an account opened active has no opening
    active = new_id()
    body = {"account_id": active, "household_id": "OPNH-X", "name": "A", "model_id": MODEL}
    assert ok(await api.post("/accounts", json=body), 201)["status"] == "active"
    response = await api.get(f"/accounts/{active}/opening")
    assert response.status_code == 404
    assert response.json()["detail"] == (
        f"account {active} was not opened as a workflow: it has no opening steps"
    )


async def test_opening_in_a_batch_gives_every_account_its_steps(api, db):
    ids = [new_id(), new_id()]
    body = {
        "accounts": [
            {"account_id": ids[0], "household_id": "OPNH-B", "name": "B", "status": "opening"},
            {
                "account_id": ids[1],
                "household_id": "OPNH-B",
                "name": "B",
                "model_id": MODEL,
                "status": "opening",
            },
        ]
    }
    assert ok(await api.post("/accounts:batch", json=body), 201) == {"opened": 2}
    first, second = [ok(await api.get(f"/accounts/{a}/opening")) for a in ids]
    assert first["missing"] == [*MANUAL[:2], "investment_profile", MANUAL[2]]
    assert second["missing"] == list(MANUAL)
    for account_id in ids:
        assert await published_statuses(db, account_id) == ["suspended"]


async def test_a_status_other_than_active_or_opening_cannot_be_opened_with(api):
    body = {"account_id": new_id(), "household_id": "OPNH-X", "name": "A", "status": "suspended"}
    fields = problem(await api.post("/accounts", json=body), 422)
    assert [f for f, _ in fields] == ["status"]


# --- steps --------------------------------------------------------------------------------------


async def test_steps_are_marked_and_bad_marks_are_refused_naming_the_field(api, db):
    account_id = await open_as_workflow(api)
    [(field, message)] = problem(await mark(api, account_id, "investment_profile"), 422)
    assert field == "step" and "automatic" in message
    [(field, message)] = problem(await mark(api, account_id, "signature"), 422)
    assert field == "step" and "paperwork" in message
    [(field, _)] = problem(await mark(api, account_id, "funding", "exception"), 422)
    assert field == "note"
    [(field, _)] = problem(await mark(api, account_id, "funding", "exception", "  "), 422)
    assert field == "note"
    fields = problem(await mark(api, account_id, "funding", "later"), 422)
    assert [f for f, _ in fields] == ["outcome"]
    assert (await mark(api, "OPN-NOWHERE", "funding")).status_code == 404

    marked = ok(await mark(api, account_id, "paperwork"))
    [paperwork] = [s for s in marked["steps"] if s["step"] == "paperwork"]
    assert (paperwork["status"], paperwork["updated_by"]) == ("done", "overlay-manager@opn-a")
    assert marked["missing"] == ["funding", "compliance_review"]
    assert marked["status"] == "opening"
    assert await published_statuses(db, account_id) == ["suspended"]  # a step is no news
    assert ("overlay-manager@opn-a", "opening-step") in await audited(db, account_id)


async def test_an_exception_is_a_task_with_its_note_until_the_step_is_done(api, db):
    account_id = await open_as_workflow(api, name="Exceptional")
    note = "transfer form unsigned"
    marked = ok(await mark(api, account_id, "funding", "exception", note))
    assert marked["missing"] == list(MANUAL)
    tasks = ok(await api.get("/tasks", params={"account_id": account_id}))
    [task] = tasks["items"]
    assert task["task_id"] == f"exception:{account_id}:funding"
    assert (task["kind"], task["step"], task["note"]) == ("exception", "funding", note)
    assert (task["account_name"], task["raised_by"]) == ("Exceptional", "overlay-manager@opn-a")
    assert task["age_days"] == 0
    assert task["missing"] == list(MANUAL)
    listed = ok(await api.get("/tasks", params={"kind": "exception", "limit": 1000}))
    assert f"exception:{account_id}:funding" in [t["task_id"] for t in listed["items"]]
    overdue_only = ok(await api.get("/tasks", params={"kind": "overdue", "limit": 1000}))
    assert account_id not in [t["account_id"] for t in overdue_only["items"]]
    fields = problem(await api.get("/tasks", params={"kind": "late"}), 422)
    assert [f for f, _ in fields] == ["query.kind"]

    ok(await mark(api, account_id, "funding", "done", "received by wire"))
    assert ok(await api.get("/tasks", params={"account_id": account_id}))["items"] == []


async def test_an_opening_taking_too_long_is_an_overdue_task(api, db):
    late, recent = await open_as_workflow(api), await open_as_workflow(api)
    ok(await mark(api, late, "paperwork"))
    async with db.sessions() as s:  # opened a week ago
        await s.execute(
            text("UPDATE accounts SET created_at = :t WHERE account_id = :a"),
            {"t": datetime.now(UTC) - timedelta(days=7, hours=1), "a": late},
        )
        await s.commit()
    tasks = ok(await api.get("/tasks", params={"kind": "overdue", "limit": 1000}))["items"]
    mine = {t["account_id"]: t for t in tasks if t["account_id"] in (late, recent)}
    assert list(mine) == [late]
    assert mine[late]["task_id"] == f"overdue:{late}"
    assert mine[late]["age_days"] == 7
    assert mine[late]["missing"] == ["funding", "compliance_review"]
    assert mine[late]["step"] is None
    # oldest first: an overdue opening comes before today's exceptions
    ok(await mark(api, recent, "paperwork", "exception", "missing signature"))
    both = ok(await api.get("/tasks", params={"limit": 1000}))["items"]
    order = [t["task_id"] for t in both]
    assert order.index(f"overdue:{late}") < order.index(f"exception:{recent}:paperwork")
    assert [t["since"] for t in both] == sorted(t["since"] for t in both)


async def test_tasks_are_paged(api, db):
    for _ in range(3):
        account_id = await open_as_workflow(api)
        ok(await mark(api, account_id, "compliance_review", "exception", "needs review"))
    first = ok(await api.get("/tasks", params={"kind": "exception", "limit": 2}))
    assert len(first["items"]) == 2 and first["next_offset"] == 2
    rest = ok(await api.get("/tasks", params={"kind": "exception", "limit": 1000, "offset": 2}))
    everything = ok(await api.get("/tasks", params={"kind": "exception", "limit": 1000}))
    ids = [t["task_id"] for t in first["items"] + rest["items"]]
    assert ids == [t["task_id"] for t in everything["items"]]


# --- opening ----------------------------------------------------------------------------------


async def test_the_last_step_done_opens_the_account_and_announces_it_active(api, db):
    account_id = await open_as_workflow(api)
    for step in MANUAL[:-1]:
        assert ok(await mark(api, account_id, step))["status"] == "opening"
    opened = ok(await mark(api, account_id, MANUAL[-1]))
    assert (opened["status"], opened["missing"]) == ("active", [])
    assert ok(await api.get(f"/accounts/{account_id}"))["status"] == "active"
    assert await published_statuses(db, account_id) == ["suspended", "active"]
    actions = await audited(db, account_id)
    assert actions[-1] == ("overlay-manager@opn-a", "open")
    assert [a for _, a in actions].count("opening-step") == 3
    # its opening is over
    [(field, _)] = problem(await mark(api, account_id, "funding", "exception", "late"), 409)
    assert field == "step"
    assert ok(await api.get(f"/accounts/{account_id}/opening"))["status"] == "active"


async def test_a_person_cannot_make_an_opening_account_active_by_hand(api, db):
    account_id = await open_as_workflow(api)
    ok(await mark(api, account_id, "funding"))
    for status in ("active", "suspended"):
        response = await api.patch(f"/accounts/{account_id}", json={"status": status})
        [(field, message)] = problem(response, 409)
        assert field == "status"
        assert "paperwork" in message and "compliance_review" in message
        assert "funding" not in message
    assert ok(await api.get(f"/accounts/{account_id}"))["status"] == "opening"
    response = await api.patch(f"/accounts/{account_id}", json={"status": "opening"})
    fields = problem(response, 422)  # not a status a person may set
    assert fields and all(f.startswith("status") for f, _ in fields)
    # it may be closed (an opening given up): no longer a task
    ok(await mark(api, account_id, "paperwork", "exception", "client withdrew"))
    closed = ok(await api.patch(f"/accounts/{account_id}", json={"status": "closed"}))
    assert closed["status"] == "closed"
    assert await published_statuses(db, account_id) == ["suspended", "closed"]
    assert ok(await api.get("/tasks", params={"account_id": account_id}))["items"] == []


async def test_the_automatic_step_follows_a_model_being_set_by_patch(api, db):
    account_id = await open_as_workflow(api, model_id=None)
    for step in MANUAL:
        ok(await mark(api, account_id, step))
    waiting = ok(await api.get(f"/accounts/{account_id}/opening"))
    assert (waiting["status"], waiting["missing"]) == ("opening", ["investment_profile"])
    changed = ok(await api.patch(f"/accounts/{account_id}", json={"model_id": MODEL}))
    assert changed["status"] == "active"  # the same request opened it
    assert await published_statuses(db, account_id) == ["suspended", "active"]
    assert [a for _, a in await audited(db, account_id)][-2:] == ["change", "open"]


async def test_the_automatic_step_goes_back_to_pending_when_the_model_goes(api, db):
    account_id = await open_as_workflow(api)
    ok(await api.patch(f"/accounts/{account_id}", json={"model_id": None}))
    opening = ok(await api.get(f"/accounts/{account_id}/opening"))
    [profile] = [s for s in opening["steps"] if s["step"] == "investment_profile"]
    assert (profile["status"], profile["note"]) == ("pending", "no model or strategy set")
    assert profile["updated_by"] == "overlay-manager@opn-a"


async def test_the_automatic_step_follows_a_strategy(api, db):
    account_id = await open_as_workflow(api, model_id=None)
    for step in MANUAL:
        ok(await mark(api, account_id, step))
    band = {"kind": "absolute", "width": "0"}
    sleeves = {"sleeves": [{"sleeve_id": "all", "model_id": MODEL, "weight": "1", "band": band}]}
    ok(await api.put(f"/accounts/{account_id}/strategy", json=sleeves))
    assert ok(await api.get(f"/accounts/{account_id}"))["status"] == "active"
    assert await published_statuses(db, account_id) == ["suspended", "active"]


async def test_a_bulk_change_setting_a_model_opens_the_accounts_it_completes(api, db):
    ready, waiting, active = new_id(), new_id(), new_id()
    await open_as_workflow(api, ready, model_id=None)
    await open_as_workflow(api, waiting, model_id=None)
    for step in MANUAL:
        ok(await mark(api, ready, step))
    body = {"account_id": active, "household_id": "OPNH-X", "name": "A"}
    ok(await api.post("/accounts", json=body), 201)
    change = {
        "selection": {"account_ids": [ready, waiting, active]},
        "change": {"kind": "set_model", "model_id": MODEL},
        "note": "the opening accounts' model",
    }
    preview = ok(await api.post("/bulk-changes", json=change), 201)
    applied = ok(await api.post(f"/bulk-changes/{preview['bulk_change_id']}/apply"))
    assert applied["changed"] == 3
    statuses = {a: ok(await api.get(f"/accounts/{a}"))["status"] for a in (ready, waiting, active)}
    assert statuses == {ready: "active", waiting: "opening", active: "active"}
    assert await published_statuses(db, ready) == ["suspended", "active"]
    assert await published_statuses(db, waiting) == ["suspended", "suspended"]
    assert ok(await api.get(f"/accounts/{waiting}/opening"))["missing"] == list(MANUAL)
    assert ("overlay-manager@opn-a", "open") in await audited(db, ready)
    assert "open" not in [a for _, a in await audited(db, waiting)]


async def test_a_bulk_change_cannot_make_an_opening_account_active(api, db):
    account_id = await open_as_workflow(api)
    change = {
        "selection": {"account_ids": [account_id]},
        "change": {"kind": "set_status", "status": "active"},
        "note": "activate",
    }
    preview = ok(await api.post("/bulk-changes", json=change), 201)
    assert preview["counts"]["with_problems"] == 1
    response = await api.post(f"/bulk-changes/{preview['bulk_change_id']}/apply")
    [(field, message)] = problem(response, 422)
    assert field == f"accounts[{account_id}].status" and "opening" in message
    assert ok(await api.get(f"/accounts/{account_id}"))["status"] == "opening"


async def test_a_proposal_for_an_opening_account_waits_and_cannot_be_approved(api, db):
    account_id = await open_as_workflow(api)
    proposal_id = uuid.uuid4()
    event = example(
        "trades-proposed", proposal_id=proposal_id, account_id=account_id, model_id=MODEL
    )
    async with unit_of_work(db, "test") as uow:
        await service.receive_proposals(
            uow,
            PostgresAccountRepository(uow.session),
            [delivery(event, tenant=TENANT, source="rebalance-svc")],
        )
    proposal = ok(await api.get(f"/proposals/{proposal_id}"))
    assert (proposal["status"], proposal["decision_note"]) == (
        "pending",
        "waiting: account is opening",
    )
    approver = bearer(TENANT, (Role.OVERLAY_MANAGER,))
    response = await api.post(f"/proposals/{proposal_id}/approve", json={}, headers=approver)
    assert response.status_code == 409 and "opening" in response.json()["detail"]


# --- filters see opening ------------------------------------------------------------------------


async def test_a_filter_selects_opening_accounts(api, db):
    account_id = await open_as_workflow(api)
    conditions = [
        {"field": "status", "op": "eq", "value": "opening"},
        {"field": "household_id", "op": "eq", "value": f"OPNH-{account_id}"},
    ]
    body = {"name": "Opening", "action": "review", "conditions": conditions}
    ok(await api.put("/filters/opn-opening", json=body))
    selected = ok(await api.get("/filters/opn-opening/accounts"))
    assert [a["account_id"] for a in selected["items"]] == [account_id]
    assert (await api.delete("/filters/opn-opening")).status_code == 204


# --- tenants ------------------------------------------------------------------------------------


async def test_another_tenant_sees_nothing_of_an_opening(api, db):
    account_id = await open_as_workflow(api)
    ok(await mark(api, account_id, "paperwork", "exception", "acme only"))
    evil = bearer(OTHER, (Role.ADMIN,))
    response = await api.get(f"/accounts/{account_id}/opening", headers=evil)
    assert response.status_code == 404
    nowhere = await api.get("/accounts/OPN-NOWHERE/opening", headers=evil)
    assert response.json()["detail"].replace(account_id, "X") == nowhere.json()["detail"].replace(
        "OPN-NOWHERE", "X"
    )
    marked = await api.post(
        f"/accounts/{account_id}/opening/steps/paperwork", json={"outcome": "done"}, headers=evil
    )
    assert marked.status_code == 404
    theirs = ok(await api.get("/tasks", params={"limit": 1000}, headers=evil))["items"]
    assert not [t for t in theirs if t["account_id"] == account_id]
    [mine] = ok(await api.get("/tasks", params={"account_id": account_id}))["items"]
    assert mine["note"] == "acme only"
    assert ok(await api.get(f"/accounts/{account_id}/opening"))["missing"] == list(MANUAL)
