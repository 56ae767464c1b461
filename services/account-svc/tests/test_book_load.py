"""account-svc loads households, accounts, sleeves and restrictions from the book files, over
its /book-loads routes on real PostgreSQL (the app without its lifespan: no Kafka; what would
be published is read from the outbox). A loaded account is stored and announced exactly as
the same account opened over REST; every bad row is named by file, line and column and
nothing is applied; a load applied twice is applied once. Ids start with BL (shared DB)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from account_svc import service
from account_svc.main import spec
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import AccountIn, SecurityListIn
from ballast_common.contracts.events import ModelChangedV1, ModelTargetV1
from ballast_common.outbox import outbox
from ballast_common.testing import api_client, bearer, migrated_database, unit_of_work
from sqlalchemy import func, select, text

pytestmark = pytest.mark.integration

OPTIONS = {"as_of": "2026-12-04"}
MODELS = ("bl-eq", "bl-bonds", "bl-intl", "bl-core")


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        for model_id in MODELS:
            await service.remember_model(
                uow,
                "demo",
                ModelChangedV1(
                    model_id=model_id,
                    name=model_id,
                    version=1,
                    changed_by="pm",
                    targets=[ModelTargetV1(symbol="AAA", weight=Decimal(1))],
                ),
            )
        await service.put_security_list(
            uow, "demo", "ops@demo", "bl-esg", SecurityListIn(name="ESG", symbols=["XOM", "CVX"])
        )
    async with unit_of_work(database, "test") as uow:
        await service.open_accounts(
            uow,
            PostgresAccountRepository(uow.session),
            "demo",
            "api",
            [
                AccountIn(account_id=a, household_id="BLH-OLD", name="Old", model_id="bl-core")
                for a in ("BL-OLD", "BL-OLD2")
            ],
        )
    yield database
    await database.dispose()


@pytest.fixture
async def api(db) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db) as http:
        yield http


@pytest.fixture
async def unapplied(api) -> AsyncIterator[list[str]]:
    """Loads a test leaves staged: discarded at its end (their staging tables would stay in
    the schema that tests/migrations compares with the code)."""
    load_ids: list[str] = []
    yield load_ids
    for load_id in load_ids:
        assert (await api.delete(f"/book-loads/{load_id}")).status_code == 204


async def stage(api: httpx.AsyncClient, load_id: str, files: dict[str, str]) -> None:
    for name, body in files.items():
        response = await api.put(
            f"/book-loads/{load_id}/files/{name}",
            content=body.encode(),
            headers={"content-type": "text/csv"},
        )
        assert response.status_code == 201, response.text


async def account_events(db, *account_ids: str) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        rows = await s.execute(
            select(outbox.c.value)
            .where(outbox.c.topic == "account-changed", outbox.c.key.in_(account_ids))
            .order_by(outbox.c.id)
        )
        return [json.loads(value)["payload"] for (value,) in rows]


async def count(db, sql: str) -> int:
    async with db.sessions() as s:
        return int((await s.execute(text(sql))).scalar_one())


async def outbox_size(db) -> int:
    async with db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(outbox))).scalar_one())


GOOD = {
    "households.csv": 'household_id,name,tenant\nBLH-1,"Lee, Jordan",\nBLH-2,Okafor,demo\n',
    "accounts.csv": (
        "account_id,household_id,name,account_type,model_id,auto_approve,min_trade_value,"
        "fractional,cash_target,cash_reserve,relief_method,short_term_rate,long_term_rate,"
        "gain_budget,avoid_short_term_gains,harvest,rebalance_range,interior_pct\n"
        "BL-SMA,BLH-1,Lee taxable,taxable,bl-eq,true,50.00,yes,0.02,1000.00,hifo,0.35,0.15,"
        "25000.00,true,false,,\n"
        "BL-UMA,BLH-1,Lee UMA,IRA,,no,,,,,,,,,,,interior,40\n"
        "BL-RES,BLH-2,Okafor,,bl-eq,,,,,,,,,,,,,\n"
        "BL-KNOWN,BLH-OLD,Known household,,bl-core,,,,,,,,,,,,,\n"
    ),
    "sleeves.csv": (
        "account_id,sleeve_id,model_id,weight,band_kind,band_width\n"
        "BL-UMA,core,bl-eq,0.6,absolute,0.05\n"
        "BL-UMA,bonds,bl-bonds,0.30,relative,0.1\n"
        "BL-UMA,intl,bl-intl,0.1,,0.02\n"
    ),
    "restrictions.csv": (
        "account_id,kind,scope,value,source,reason\n"
        'BL-RES,do_not_buy,security,XOM,client,"no oil, please"\n'
        "BL-RES,DO_NOT_HOLD,list,bl-esg,compliance,ESG screen\n"
        "BL-UMA,do_not_sell,sector,Energy,,keeps the gains\n"
    ),
}

# The same accounts as GOOD, opened over REST (ids BLR-*); a restriction names who set it
# (from files: the load).
SET_BY = "book-load:bl-good"
REST_TWINS: list[dict[str, Any]] = [
    {
        "account_id": "BLR-SMA",
        "household_id": "BLH-1",
        "name": "Lee taxable",
        "account_type": "taxable",
        "model_id": "bl-eq",
        "auto_approve": True,
        "rebalance_settings": {
            "min_trade_value": "50.00",
            "fractional": True,
            "cash_target": "0.02",
            "cash_reserve": "1000.00",
        },
        "tax_settings": {
            "relief_method": "hifo",
            "short_term_rate": "0.35",
            "long_term_rate": "0.15",
            "gain_budget": "25000.00",
            "avoid_short_term_gains": True,
            "harvest": False,
        },
    },
    {
        "account_id": "BLR-UMA",
        "household_id": "BLH-1",
        "name": "Lee UMA",
        "account_type": "ira",
        "auto_approve": False,
        "strategy": {
            "sleeves": [
                {
                    "sleeve_id": "core",
                    "model_id": "bl-eq",
                    "weight": "0.6",
                    "band": {"kind": "absolute", "width": "0.05"},
                },
                {
                    "sleeve_id": "bonds",
                    "model_id": "bl-bonds",
                    "weight": "0.30",
                    "band": {"kind": "relative", "width": "0.1"},
                },
                {
                    "sleeve_id": "intl",
                    "model_id": "bl-intl",
                    "weight": "0.1",
                    "band": {"width": "0.02"},
                },
            ],
            "rebalance_range": "interior",
            "interior_pct": "40",
        },
        "restrictions": [
            {
                "kind": "do_not_sell",
                "scope": "sector",
                "value": "Energy",
                "reason": "keeps the gains",
            }
        ],
    },
    {
        "account_id": "BLR-RES",
        "household_id": "BLH-2",
        "name": "Okafor",
        "model_id": "bl-eq",
        "restrictions": [
            {
                "kind": "do_not_buy",
                "scope": "security",
                "value": "XOM",
                "source": "client",
                "reason": "no oil, please",
            },
            {
                "kind": "do_not_hold",
                "scope": "list",
                "value": "bl-esg",
                "source": "compliance",
                "reason": "ESG screen",
            },
        ],
    },
    {
        "account_id": "BLR-KNOWN",
        "household_id": "BLH-OLD",
        "name": "Known household",
        "model_id": "bl-core",
    },
]


LOADED = ("BL-SMA", "BL-UMA", "BL-RES", "BL-KNOWN")


async def test_a_good_file_set_loads_as_rest_would_open_it(api, db):
    await stage(api, "bl-good", GOOD)
    checked = await api.post("/book-loads/bl-good/validate", json=OPTIONS)
    assert checked.json() == {
        "load_id": "bl-good",
        "status": "staged",
        "valid": True,
        "problems": [],
        "truncated": False,
    }
    applied = await api.post("/book-loads/bl-good/apply", json=OPTIONS)
    assert applied.status_code == 200, applied.text
    assert applied.json() == {
        "load_id": "bl-good",
        "status": "applied",
        "repeated": False,
        "households": 2,
        "accounts": 4,
        "umas": 1,
        "restrictions": 3,
    }
    assert await count(db, "SELECT count(*) FROM households WHERE household_id LIKE 'BLH-_'") == 2
    assert (
        await count(
            db, "SELECT count(*) FROM households WHERE name = 'Lee, Jordan' AND tenant = 'demo'"
        )
        == 1
    )

    # opened by a caller named as the load records who set the restrictions
    twins = {"accounts": REST_TWINS}
    response = await api.post("/accounts:batch", json=twins, headers=bearer(subject=SET_BY))
    assert response.status_code == 201, response.text
    loaded = await account_events(db, *LOADED)  # one each, in the file's order
    opened = await account_events(db, *(twin["account_id"] for twin in REST_TWINS))
    assert [p["account_id"] for p in loaded] == list(LOADED)
    for payload, twin in zip(loaded, opened, strict=True):
        assert payload == twin | {"account_id": payload["account_id"]}
    [esg] = [r for r in loaded[2]["restrictions"] if r["scope"] == "list"]
    assert esg["symbols"] == ["CVX", "XOM"]

    for account_id in LOADED:  # stored alike, as the REST reads show
        file_view = (await api.get(f"/accounts/{account_id}")).json()
        rest_view = (await api.get(f"/accounts/{account_id.replace('BL-', 'BLR-')}")).json()
        for view in (file_view, rest_view):
            del view["account_id"], view["created_at"], view["updated_at"]
            for restriction in view["restrictions"]:
                del restriction["set_at"]
        assert file_view == rest_view
    async with db.sessions() as s:
        stored = await s.execute(
            text(
                "SELECT account_id, rebalance_settings, tax_settings, strategy FROM accounts "
                "WHERE account_id IN ('BL-SMA', 'BLR-SMA', 'BL-UMA', 'BLR-UMA') "
                "ORDER BY account_id"
            )
        )
        by_id = {row[0]: row[1:] for row in stored}
    assert by_id["BL-SMA"] == by_id["BLR-SMA"] and by_id["BL-UMA"] == by_id["BLR-UMA"]


async def test_applying_twice_applies_once(api, db):
    await stage(
        api,
        "bl-twice",
        {
            "households.csv": "household_id,name\nBLH-T,Twice\n",
            "accounts.csv": "account_id,household_id,name,model_id\nBL-T1,BLH-T,One,bl-eq\n",
        },
    )
    first = await api.post("/book-loads/bl-twice/apply", json=OPTIONS)
    size = await outbox_size(db)
    again = await api.post("/book-loads/bl-twice/apply", json=OPTIONS)
    assert first.json()["repeated"] is False and first.json()["accounts"] == 1
    assert again.status_code == 200 and again.json()["repeated"] is True
    assert again.json()["accounts"] == 1
    assert await outbox_size(db) == size
    assert len(await account_events(db, "BL-T1")) == 1
    assert await count(db, "SELECT count(*) FROM accounts WHERE account_id = 'BL-T1'") == 1
    # one audit record sums the load up (never one per row), and only the first apply's
    [record] = (await api.get("/audit", params={"subject_id": "bl-twice"})).json()["items"]
    assert (record["actor"], record["action"], record["subject_type"]) == (
        "book-load:bl-twice",
        "apply",
        "book-load",
    )
    assert record["after"]["accounts"] == 1 and record["after"]["rows"]["accounts.csv"] == 1


def rows(header: str, *lines: str) -> str:
    return "\n".join((header, *lines)) + "\n"


BAD = {
    "households.csv": rows(
        "household_id,name,tenant",
        "BLH-B1,Bad family,",
        "BLH-OLD,Old household elsewhere,other",
        "BLH/3,Slash,",
    ),
    "accounts.csv": rows(
        "account_id,household_id,name,tenant,model_id,short_term_rate,cash_target,"
        "rebalance_range,interior_pct",
        "BL-OLD,BLH-B1,exists,,bl-eq,,,,",
        "BLB-NOHH,BLH-NONE,no household,,bl-eq,,,,",
        "BLB-NOMODEL,BLH-B1,unknown model,,bl-nope,,,,",
        "BLB-NEITHER,BLH-B1,neither,,,,,,",
        "BLB-BOTH,BLH-B1,both,,bl-eq,,,,",
        "BLB-RATE,BLH-B1,rate,,bl-eq,1.5,,,",
        "BLB-CASH,BLH-B1,cash,,bl-eq,,1,,",
        "BLB-INT,BLH-B1,interior,,,,,band,40",
        "BLB-SMAR,BLH-B1,sma range,,bl-eq,,,target,",
        "BLB-TEN,BLH-B1,tenant,other,bl-eq,,,,",
        "BLB/ID,BLH-B1,id,,bl-eq,,,,",
        "BLB-UMA,BLH-B1,uma,,,,,,",
        "BLB-PCT,BLH-B1,pct,,,,,interior,150",
        "BLB-RES,BLH-B1,res,,bl-eq,,,,",
        "BLB-MANY,BLH-B1,many sleeves,,,,,,",
        "BLB-MANYR,BLH-B1,many restrictions,,bl-eq,,,,",
        "BLB-REL,BLH-B1,relative band,,,,,,",
    ),
    "sleeves.csv": rows(
        "account_id,sleeve_id,model_id,weight,band_kind,band_width",
        "BLB-BOTH,core,bl-eq,1,absolute,0",
        "BLB-INT,core,bl-eq,1,absolute,0",
        "BLB-GHOST,core,bl-eq,1,absolute,0",
        "BLB-UMA,a,bl-eq,0.5,absolute,0.6",
        "BLB-UMA,b,bl-eq,0.3,relative,0.1",
        "BLB-UMA,c,bl-unknown,0.1,absolute,0.01",
        "BLB-PCT,core,bl-eq,1,absolute,0",
        *(f"BLB-MANY,s{i},bl-eq,{'0.2' if i == 0 else '0.04'},absolute,0" for i in range(21)),
        "BLB-REL,a,bl-eq,0.6,relative,0.9",
        "BLB-REL,b,bl-bonds,0.4,absolute,0",
    ),
    "restrictions.csv": rows(
        "account_id,kind,scope,value,source,reason",
        "BLB-GHOST2,do_not_buy,security,XOM,,r",
        "BL-OLD2,do_not_buy,security,XOM,,r",
        "BLB-RES,do_not_hold,list,bl-nolist,,r",
        "BLB-RES,do_not_buy,security,NOT A SYMBOL,,r",
        "BLB-RES,do_not_buy,security,XOM,,r",
        "BLB-RES,DO_NOT_BUY,security, XOM,,r",
        *(f"BLB-MANYR,do_not_buy,sector,S{i},,r" for i in range(501)),
    ),
}

# (file, line, column, words of the message)
EXPECTED = [
    ("households.csv", 3, "tenant", "household BLH-OLD belongs to tenant demo, not other"),
    ("households.csv", 3, "tenant", "tenant other is not yours: this load is tenant demo's"),
    ("households.csv", 4, "household_id", "'BLH/3' may have only letters, digits"),
    ("accounts.csv", 2, "account_id", "account BL-OLD already exists"),
    ("accounts.csv", 3, "household_id", "unknown household BLH-NONE"),
    ("accounts.csv", 4, "model_id", "unknown model bl-nope"),
    ("accounts.csv", 5, "model_id", "account BLB-NEITHER follows no model"),
    ("accounts.csv", 6, "model_id", "a UMA (with sleeves) has no model_id"),
    ("accounts.csv", 7, "short_term_rate", "short_term_rate must be at most 1"),
    ("accounts.csv", 8, "cash_target", "cash_target must be less than 1"),
    ("accounts.csv", 9, "interior_pct", "interior_pct is given but rebalance_range is band"),
    ("accounts.csv", 10, "rebalance_range", "rebalance_range is a UMA's setting"),
    ("accounts.csv", 11, "tenant", "tenant other differs from tenant demo of household BLH-B1"),
    ("accounts.csv", 11, "tenant", "tenant other is not yours"),
    ("accounts.csv", 12, "account_id", "'BLB/ID' may have only letters, digits"),
    ("accounts.csv", 14, "interior_pct", "interior_pct must be at most 100"),
    ("sleeves.csv", 4, "account_id", "unknown account BLB-GHOST: it is not in accounts.csv"),
    ("sleeves.csv", 5, "band_width", "the band is wider than the target allows"),
    ("sleeves.csv", 5, "weight", "account BLB-UMA: sleeve weights add up to 0.9, not 1"),
    ("sleeves.csv", 6, "model_id", "model bl-eq has two sleeves: one per model"),
    ("sleeves.csv", 7, "model_id", "unknown model bl-unknown"),
    ("sleeves.csv", 9, "sleeve_id", "account BLB-MANY has 21 sleeves: at most 20"),
    ("sleeves.csv", 30, "band_width", "relative band ±0.9 around target 0.6 gives 0.06–1.14"),
    ("restrictions.csv", 2, "account_id", "unknown account BLB-GHOST2"),
    ("restrictions.csv", 3, "account_id", "PUT /accounts/BL-OLD2/restrictions"),
    ("restrictions.csv", 4, "value", "unknown security list bl-nolist"),
    ("restrictions.csv", 5, "value", "'NOT A SYMBOL' is not a symbol"),
    ("restrictions.csv", 7, "value", "do_not_buy on security XOM given twice (first on line 6)"),
    ("restrictions.csv", 8, "account_id", "account BLB-MANYR has 501 restrictions: at most 500"),
]


async def test_every_kind_of_bad_row_is_named_and_nothing_is_applied(api, db, unapplied):
    unapplied.append("bl-bad")
    await stage(api, "bl-bad", BAD)
    size = await outbox_size(db)
    checked = (await api.post("/book-loads/bl-bad/validate", json=OPTIONS)).json()
    assert checked["valid"] is False
    found = [(p["file"], p["line"], p["column"], p["message"]) for p in checked["problems"]]
    for file, line, column, words in EXPECTED:
        assert any((f, n, c) == (file, line, column) and words in m for f, n, c, m in found), (
            f"no problem {file}:{line} {column}: {words}\nfound: {found}"
        )
    good_lines = {("accounts.csv", 13), ("accounts.csv", 15), ("accounts.csv", 18)}
    good_lines |= {("sleeves.csv", 2), ("sleeves.csv", 31)}
    assert not [p for p in found if (p[0], p[1]) in good_lines]

    refused = await api.post("/book-loads/bl-bad/apply", json=OPTIONS)
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "nothing was applied" in refused.json()["detail"]
    fields = {e["field"] for e in refused.json()["errors"]}
    assert {"accounts.csv:2 account_id", "sleeves.csv:5 band_width"} <= fields
    assert await count(db, "SELECT count(*) FROM accounts WHERE account_id LIKE 'BLB%'") == 0
    assert await count(db, "SELECT count(*) FROM households WHERE household_id = 'BLH-B1'") == 0
    assert await outbox_size(db) == size
    load = (await api.get("/book-loads/bl-bad")).json()  # still staged, until discarded
    assert load["status"] == "checked"  # its rows fit their columns; the rules refused it
    assert {name: f["rows"] for name, f in load["files"].items()} == {
        "households.csv": 3,
        "accounts.csv": 17,
        "sleeves.csv": 30,
        "restrictions.csv": 507,
    }


async def test_an_account_needs_the_files_account_svc_requires(api, unapplied):
    unapplied.append("bl-missing")
    await stage(api, "bl-missing", {"accounts.csv": GOOD["accounts.csv"]})
    checked = (await api.post("/book-loads/bl-missing/validate", json=OPTIONS)).json()
    assert checked["problems"] == [
        {
            "file": "households.csv",
            "line": 0,
            "column": "",
            "message": "required file was not uploaded",
        }
    ]
