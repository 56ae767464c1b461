"""model-hub-svc loads securities.csv and prices.csv (docs/book-files.md) on real PostgreSQL."""

import json
from datetime import date
from decimal import Decimal

import pytest
from ballast_common import audit, book_loads
from ballast_common.book_loads import LoadOptions
from ballast_common.errors import InvalidInput
from ballast_common.outbox import outbox
from ballast_common.testing import migrated_database, unit_of_work
from model_hub_svc import repository, service
from model_hub_svc.main import spec
from model_hub_svc.repository import PostgresModelHubRepository
from model_hub_svc.schemas import SecurityIn
from sqlalchemy import select

pytestmark = pytest.mark.integration
OPTIONS = LoadOptions(as_of=date(2026, 12, 4), tenant="demo")
LOAD = spec.book_load
assert LOAD is not None


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        await service.upsert_securities(
            uow,
            PostgresModelHubRepository(uow.session),
            [SecurityIn(symbol="BLK1", name="Old", asset_class="US Equity", sector="IT",
                        price=Decimal("10"))],
            tenant="demo",
            actor="pm",
        )  # fmt: skip
    yield database
    await database.dispose()


async def stage(db, load_id: str, name: str, data: str) -> None:
    async def body():
        yield data.encode()

    async with unit_of_work(db, "test") as uow:
        await book_loads.stage_file(uow.session, LOAD, OPTIONS.tenant, load_id, name, body())


async def test_new_securities_and_prices_load_and_are_announced(db):
    await stage(
        db,
        "m-1",
        "securities.csv",
        "symbol,name,asset_class,sector,fractional_eligible\n"
        "BLK2,New Co,US Equity,Energy,yes\nBLK3,Bond Fund,Bonds,Fixed Income,\n",
    )
    await stage(db, "m-1", "prices.csv", "symbol,price\nBLK1,11.5\nBLK2,20\nBLK3,99.123456\n")
    async with unit_of_work(db, "test") as uow:
        result = await book_loads.apply(uow, LOAD, "m-1", OPTIONS)
    assert result["securities_changed"] == 3
    async with db.sessions() as s:
        stored = {
            x.symbol: x for x in await repository.securities_page(s, ["BLK1", "BLK2", "BLK3"])
        }
        rows = (
            await s.execute(select(outbox.c.value).where(outbox.c.topic == "securities-changed"))
        ).all()
    assert stored["BLK1"].price == Decimal("11.5") and stored["BLK1"].name == "Old"
    assert stored["BLK2"].fractional_eligible and stored["BLK3"].price == Decimal("99.123456")
    announced = {
        s["symbol"]: s["price"] for (v,) in rows for s in json.loads(v)["payload"]["securities"]
    }
    assert Decimal(announced["BLK2"]) == 20 and Decimal(announced["BLK1"]) == Decimal("11.5")
    async with db.sessions() as s:
        [record] = await audit.read(
            s,
            OPTIONS.tenant,
            subject_type="book-load",
            subject_id="m-1",
            after=None,
            limit=10,
            offset=0,
        )
    assert (record.actor, record.action) == ("book-load:m-1", "apply")
    assert record.after["securities_changed"] == ["BLK1", "BLK2", "BLK3"]


async def test_an_unknown_or_unpriced_security_is_refused_naming_its_line(db):
    await stage(db, "m-2", "securities.csv", "symbol,name,asset_class,sector\nBLK9,X,Y,Z\n")
    await stage(db, "m-2", "prices.csv", "symbol,price\nBLK1,12\nZZZZ,5\n")
    with pytest.raises(InvalidInput) as refused:
        async with unit_of_work(db, "test") as uow:
            await book_loads.apply(uow, LOAD, "m-2", OPTIONS)
    fields = {(e.field, e.message) for e in refused.value.errors}
    assert (
        "prices.csv:3 symbol",
        "unknown security ZZZZ: add it to securities.csv or the security master",
    ) in fields
    assert ("securities.csv:2 symbol", "new security BLK9 has no price in prices.csv") in fields
    async with db.sessions() as s:
        [blk1] = await repository.securities_page(s, ["BLK1"])
    assert blk1.price != Decimal("12")  # nothing applied
