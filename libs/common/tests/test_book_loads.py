"""Book loads: staging with COPY, row checks in SQL, all-or-nothing apply (real Postgres)."""

import uuid
from datetime import date

import httpx
import pytest
from ballast_common import book_loads as loads
from ballast_common.auth import AUDIENCE, LOCAL_ISSUER, AuthSettings, TokenVerifier, authenticate
from ballast_common.book_loads import BookLoadSpec, LoadOptions, LoadProblem, StagedLoad
from ballast_common.contracts.book_files import ACCOUNTS, CASH, LOTS
from ballast_common.contracts.events import AccountChangedV1
from ballast_common.errors import Conflict, InvalidInput, NotFound
from ballast_common.testing import bearer, issuer_for_tests, migrated_database, unit_of_work
from fastapi import Depends, FastAPI
from probe_svc import Note, book_loads, make_spec
from sqlalchemy import text
from sqlmodel import select

pytestmark = pytest.mark.integration

OPTIONS = LoadOptions(as_of=date(2026, 12, 4), tenant="demo")


async def cash_accounts_are_known(session, staged: StagedLoad) -> list[LoadProblem]:
    if not staged.has("cash.csv"):
        return []
    rows = await session.execute(
        text(
            f'SELECT c.line, c.account_id FROM "{staged.table("cash.csv")}" c WHERE NOT EXISTS '
            f'(SELECT 1 FROM "{staged.table("accounts.csv")}" a WHERE a.account_id = c.account_id)'
        )
    )
    return [
        LoadProblem("cash.csv", line, "account_id", f"account {a} is not in accounts.csv")
        for line, a in rows
    ]


async def notes_from_accounts(uow, staged: StagedLoad) -> dict:
    name = loads.value_sql(ACCOUNTS, "name")
    result = await uow.session.execute(
        text(
            f"INSERT INTO notes (account_id, text) SELECT account_id, {name} "
            f'FROM "{staged.table("accounts.csv")}" ORDER BY line RETURNING account_id'
        )
    )
    ids = [r[0] for r in result]
    for account_id in ids:
        uow.publish(
            AccountChangedV1(
                account_id=account_id,
                household_id="HH",
                name="loaded",
                account_type="taxable",
                model_id=None,
                status="active",
                auto_approve=True,
            ),
            key=account_id,
            tenant=staged.tenant,
        )
    return {"accounts": len(ids)}


SPEC = BookLoadSpec(
    files=(ACCOUNTS, CASH, LOTS),
    table=book_loads,
    checks=cash_accounts_are_known,
    apply=notes_from_accounts,
    required=("accounts.csv",),
)


@pytest.fixture
async def db(database_url):
    schema = f"probe_{uuid.uuid4().hex[:6]}"
    database = await migrated_database(make_spec(schema), database_url)
    yield database
    await database.dispose()


async def chunks(data: bytes, size: int = 7):
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def stage(db, load_id: str, name: str, data: str) -> dict:
    async with unit_of_work(db, "probe-svc") as uow:
        return await loads.stage_file(
            uow.session, SPEC, OPTIONS.tenant, load_id, name, chunks(data.encode())
        )


async def problems(db, load_id: str) -> list[tuple[str, int, str]]:
    async with db.sessions() as session, session.begin():
        found = await loads.validate(session, SPEC, load_id, OPTIONS)
    return [(p["file"], p["line"], p["message"]) for p in found["problems"]]


ACCOUNTS_CSV = 'account_id,household_id,name\nA-1,HH-1,Ada\nA-2,HH-1,"Bo, Jr"\n'


async def test_good_files_apply_once_and_the_staging_goes_away(db):
    staged = await stage(db, "day-1", "accounts.csv", ACCOUNTS_CSV)
    assert staged["rows"] == 2 and staged["columns"] == ["account_id", "household_id", "name"]
    await stage(db, "day-1", "cash.csv", "\ufeffaccount_id,amount\r\nA-1,100.50\r\nA-2,0\r\n")
    assert await problems(db, "day-1") == []
    async with unit_of_work(db, "probe-svc") as uow:
        first = await loads.apply(uow, SPEC, "day-1", OPTIONS)
    async with unit_of_work(db, "probe-svc") as uow:
        again = await loads.apply(uow, SPEC, "day-1", OPTIONS)
    assert first == {"load_id": "day-1", "status": "applied", "repeated": False, "accounts": 2}
    assert again["repeated"] is True and again["accounts"] == 2
    async with db.sessions() as s:
        assert list((await s.exec(select(Note.text).order_by(Note.id))).all()) == ["Ada", "Bo, Jr"]
        left = await s.execute(
            text(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'stage_%'"
                " AND schemaname = current_schema()"
            )
        )
        assert left.scalar() == 0
        events = await s.execute(text("SELECT count(*) FROM outbox"))
        assert events.scalar() == 2
    with pytest.raises(Conflict, match="applied already"):
        await stage(db, "day-1", "cash.csv", "account_id,amount\nA-1,1\n")


async def test_every_bad_row_is_named_with_its_file_line_and_column(db):
    await stage(db, "bad", "accounts.csv", ACCOUNTS_CSV + "A-1,HH-2,Cy\n A-4,HH-2,Di\n")
    await stage(
        db,
        "bad",
        "lots.csv",
        "account_id,symbol,lot_id,quantity,acquired_on,cost_basis\n"
        "A-1,MSFT,L1,10,2026-02-30,100\n"
        "A-1,MSFT,L2,-3,2026-01-05,1.23456\n"
        "A-2,MSFT,L3,abc,2026-13-01,\n",
    )
    found = await problems(db, "bad")
    assert ("accounts.csv", 4, "the same account_id as line 2") in found
    assert (
        "accounts.csv",
        5,
        "account_id must be 1 to 64 characters without leading or trailing spaces",
    ) in found
    assert ("lots.csv", 2, "acquired_on is not a date (YYYY-MM-DD)") in found
    assert ("lots.csv", 3, "quantity must be greater than 0") in found
    assert (
        "lots.csv",
        3,
        "cost_basis must have at most 18 digits before the point and 4 after",
    ) in found
    assert (
        "lots.csv",
        4,
        "quantity is not a number",
    ) in found
    assert ("lots.csv", 4, "acquired_on is not a date (YYYY-MM-DD)") in found
    assert ("lots.csv", 4, "cost_basis is empty") in found
    with pytest.raises(InvalidInput) as refused:
        async with unit_of_work(db, "probe-svc") as uow:
            await loads.apply(uow, SPEC, "bad", OPTIONS)
    assert "nothing was applied" in refused.value.detail
    assert any(e.field == "lots.csv:3 quantity" for e in refused.value.errors)
    async with db.sessions() as s:
        assert (await s.exec(select(Note))).all() == []


async def test_cross_file_checks_run_once_the_rows_are_sound(db):
    await stage(db, "x", "accounts.csv", ACCOUNTS_CSV)
    await stage(db, "x", "cash.csv", "account_id,amount\nA-1,5\nA-9,7\n")
    assert await problems(db, "x") == [("cash.csv", 3, "account A-9 is not in accounts.csv")]


async def test_a_bad_header_or_a_broken_row_is_refused_at_upload(db):
    with pytest.raises(InvalidInput) as header:
        await stage(db, "h", "cash.csv", "account,amount,colour\nA-1,5,red\n")
    messages = [e.message for e in header.value.errors]
    assert any("'account' is not a column of cash.csv" in m for m in messages)
    assert any("required column 'account_id' is missing" in m for m in messages)
    with pytest.raises(InvalidInput) as broken:
        await stage(db, "h", "cash.csv", "account_id,amount\nA-1,5\nA-2,6,7\n")
    assert broken.value.errors[0].field == "cash.csv:3"
    with pytest.raises(InvalidInput, match="empty"):
        await stage(db, "h", "cash.csv", "")


def _routes_on(db) -> FastAPI:
    """An app with the book-load routes on `db`, checking bearer tokens of the test issuer."""

    class Runtime:
        def __init__(self) -> None:
            self.db = db

        def uow(self):
            return unit_of_work(db, "probe-svc")

    app = FastAPI(dependencies=[Depends(authenticate)])
    app.state.token_verifier = TokenVerifier(
        AuthSettings(LOCAL_ISSUER, AUDIENCE, str(issuer_for_tests().jwks_path))
    )
    runtime = Runtime()
    app.include_router(loads.book_load_router(SPEC, lambda request: runtime))
    return app


async def test_the_routes_stream_validate_apply_and_discard(db):
    transport = httpx.ASGITransport(app=_routes_on(db))
    body = {"as_of": "2026-12-04"}
    operations = bearer(roles=["operations"])
    async with httpx.AsyncClient(
        transport=transport, base_url="http://probe", headers=operations
    ) as http:
        put = await http.put(
            "/book-loads/r1/files/accounts.csv",
            content=ACCOUNTS_CSV.encode(),
            headers={"content-type": "text/csv"},
        )
        assert put.status_code == 201 and put.json()["rows"] == 2
        checked = await http.post("/book-loads/r1/validate", json=body)
        assert checked.json()["valid"] is True
        assert (await http.get("/book-loads/r1")).json()["files"]["accounts.csv"]["rows"] == 2
        assert (await http.delete("/book-loads/r1")).status_code == 204
        with pytest.raises(NotFound):  # the app factory renders it as a 404 problem
            await http.get("/book-loads/r1")


async def test_a_load_is_its_tenants_own_and_its_id_is_free_for_others(db):
    transport = httpx.ASGITransport(app=_routes_on(db))
    acme, evil = bearer("acme", ["operations"]), bearer("evil", ["operations"])
    body = {"as_of": "2026-12-04"}
    as_csv = {"content-type": "text/csv"}
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as http:
        staged = await http.put(
            "/book-loads/t1/files/accounts.csv",
            headers={**acme, **as_csv},
            content=ACCOUNTS_CSV.encode(),
        )
        assert staged.status_code == 201
        for call in (
            http.get("/book-loads/t1", headers=evil),
            http.post("/book-loads/t1/validate", json=body, headers=evil),
            http.post("/book-loads/t1/apply", json=body, headers=evil),
            http.delete("/book-loads/t1", headers=evil),
        ):
            with pytest.raises(NotFound, match="no book load t1"):
                await call
        theirs = await http.put(
            "/book-loads/t1/files/accounts.csv",
            headers={**evil, **as_csv},
            content=b"account_id,household_id,name\n",
        )
        assert theirs.status_code == 201 and theirs.json()["rows"] == 0
        ours = (await http.get("/book-loads/t1", headers=acme)).json()
        assert ours["files"]["accounts.csv"]["rows"] == 2  # evil's upload changed nothing
        assert (await http.delete("/book-loads/t1", headers=acme)).status_code == 204
        assert (await http.get("/book-loads/t1", headers=evil)).json()["status"] == "staged"


VALUES = {
    "quantity": [
        "10",
        "0.5",
        "-3",
        "0",
        "1.123456789",
        "1e5",
        "1e-9",
        "NaN",
        "Infinity",
        " 7",
        "7.",
        ".5",
        "abc",
        "",
        "1" * 19,
        "+.5e1",
    ],
    "acquired_on": [
        "2026-02-28",
        "2026-02-30",
        "2026-13-01",
        "2024-02-29",
        "2026-1-05",
        "x",
        "",
        "0000-01-01",
        " 2026-01-02",
        "2026/01/02",
        "20260102",
        "2026-01-02x",
    ],
    "cost_basis": ["100", "100.1234", "100.12345", "-1", "Infinity", "12,5"],
    "lot_id": ["L1", " L1", "L1 ", "x" * 65, ""],
    "sleeve_id": ["", "core"],
}


@pytest.mark.parametrize("column", sorted(VALUES))
async def test_the_fast_screen_flags_exactly_the_rows_the_detailed_checks_refuse(db, column):
    """The screen (casts, run over every row) and the detailed checks (patterns, run where the
    screen found something) must agree on every value, or a bad row would pass unseen."""
    good = {"account_id": "A-1", "symbol": "MSFT", "lot_id": "L0", "quantity": "1",
            "acquired_on": "2026-01-02", "cost_basis": "1", "sleeve_id": ""}  # fmt: skip
    for i, value in enumerate(VALUES[column]):
        row = {**good, column: value, "lot_id": value if column == "lot_id" else f"L{i}"}
        header = list(row)
        data = ",".join(header) + "\n" + ",".join(f'"{row[c]}"' for c in header) + "\n"
        load_id = f"screen-{column}-{i}"
        await stage(db, load_id, "lots.csv", data)
        async with db.sessions() as session, session.begin():
            load = await loads._lock_load(session, SPEC, OPTIONS.tenant, load_id)
            staged = loads._staged(load, OPTIONS)
            table = staged.table("lots.csv")
            detailed = (
                await session.execute(text(loads._row_checks_sql(LOTS, table, header)))
            ).all()
            try:
                async with session.begin_nested():
                    screened = (
                        await session.execute(text(loads._screen_query(LOTS, table, header, 10)))
                    ).all()
            except Exception:
                screened = None  # the screen cannot read it: the detailed checks run everywhere
        assert (screened is None or bool(screened)) == bool(detailed), (column, value, detailed)


async def typed_cash_is_read(session, staged: StagedLoad) -> list[LoadProblem]:
    """A check on the typed rows: an amount compares as a number, not as text."""
    table = staged.typed_table("cash.csv")
    assert table is not None
    rows = await session.execute(text(f'SELECT line FROM "{table}" WHERE amount > 99.5'))
    return [LoadProblem("cash.csv", line, "amount", "more than 99.5") for (line,) in rows]


async def notes_from_typed_cash(uow, staged: StagedLoad) -> dict:
    table = staged.typed_table("cash.csv")
    rows = await uow.session.execute(
        text(f'SELECT account_id, amount, pg_typeof(amount)::text FROM "{table}" ORDER BY line')
    )
    return {"cash": [[a, str(amount), kind] for a, amount, kind in rows]}


TYPED = BookLoadSpec(
    files=(ACCOUNTS, CASH, LOTS),
    table=book_loads,
    checks=typed_cash_is_read,
    apply=notes_from_typed_cash,
    required=("accounts.csv", "cash.csv"),
    typed=True,
)


async def typed_tables(db) -> list[str]:
    async with db.sessions() as s:
        rows = await s.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'stage_%_typed'"
                " AND schemaname = current_schema() ORDER BY 1"
            )
        )
        return [r[0] for r in rows]


async def test_a_typed_spec_types_each_file_once_its_rows_passed(db):
    async def put(name: str, data: str) -> None:
        async with unit_of_work(db, "probe-svc") as uow:
            await loads.stage_file(
                uow.session, TYPED, OPTIONS.tenant, "typed", name, chunks(data.encode())
            )

    async def check() -> list[tuple[str, int, str]]:
        async with db.sessions() as session, session.begin():
            found = await loads.validate(session, TYPED, "typed", OPTIONS)
        return [(p["file"], p["line"], p["message"]) for p in found["problems"]]

    await put("accounts.csv", ACCOUNTS_CSV)
    await put("cash.csv", "account_id,amount\nA-1, 100.50\nA-2,x\n")
    assert await check() == [("cash.csv", 3, "amount is not a number")]
    assert await typed_tables(db) == []  # rows that failed are not typed
    await put("cash.csv", "account_id,amount\nA-1, 100.50\nA-2,9.5\n")
    assert await check() == [("cash.csv", 2, "more than 99.5")]  # 100.50 > 99.5 as numbers
    assert [t.rsplit("_", 2)[-2] for t in await typed_tables(db)] == ["accounts", "cash"]
    await put("cash.csv", "account_id,amount\nA-1,10.50\nA-2,9.5\n")  # again: typed again
    assert await check() == []
    async with unit_of_work(db, "probe-svc") as uow:
        applied = await loads.apply(uow, TYPED, "typed", OPTIONS)
    assert applied["cash"] == [["A-1", "10.50", "numeric"], ["A-2", "9.5", "numeric"]]
    assert await typed_tables(db) == []
