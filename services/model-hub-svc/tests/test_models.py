"""model-hub-svc's service layer on real PostgreSQL: the security master and model versions."""

from decimal import Decimal

import pytest
from ballast_common.errors import InvalidInput, NotFound
from ballast_common.testing import migrated_database, unit_of_work
from model_hub_svc import service
from model_hub_svc.main import spec
from model_hub_svc.schemas import ModelIn, SecurityIn, TargetIn

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        await service.upsert_securities(
            uow,
            [
                SecurityIn(symbol=s, name=s, asset_class="US Equity", sector="IT", price=Decimal(p))
                for s, p in (("AAPL", "190"), ("MSFT", "415"), ("NVDA", "135"))
            ],
        )
    yield database
    await database.dispose()


def model(**weights: str) -> ModelIn:
    return ModelIn(
        name="Core", targets=[TargetIn(symbol=s, weight=Decimal(w)) for s, w in weights.items()]
    )


async def test_versions_increase_and_unchanged_targets_make_no_version(db):
    async with unit_of_work(db, "t") as uow:
        first = await service.publish_model(uow, "core", model(AAPL="0.5", MSFT="0.5"), "pm", 1e-6)
    async with unit_of_work(db, "t") as uow:
        same = await service.publish_model(uow, "core", model(AAPL="0.5", MSFT="0.5"), "pm", 1e-6)
    async with unit_of_work(db, "t") as uow:
        second = await service.publish_model(uow, "core", model(AAPL="0.4", NVDA="0.6"), "pm", 1e-6)
    assert (first.version, first.created) == (1, True)
    assert (same.version, same.created) == (1, False)
    assert (second.version, second.created) == (2, True)
    async with db.sessions() as s:
        old = await service.get_model(s, "core", 1)
        assert [t.symbol for t in old.targets] == ["AAPL", "MSFT"]
        with pytest.raises(NotFound):
            await service.get_model(s, "core", 3)


@pytest.mark.parametrize(
    ("weights", "message", "field"),
    [
        ({"AAPL": "0.5", "MSFT": "0.6"}, "sum to 110", "targets"),
        ({"AAPL": "0.5", "ZZZZ": "0.5"}, "unknown security ZZZZ", "targets[1].symbol"),
    ],
)
async def test_bad_models_are_refused_naming_the_field(db, weights, message, field):
    with pytest.raises(InvalidInput, match=message) as error:
        async with unit_of_work(db, "t") as uow:
            await service.publish_model(uow, "bad", model(**weights), "pm", 1e-6)
    assert error.value.errors[0].field == field


async def test_duplicate_security_in_a_model_is_refused(db):
    body = ModelIn(
        name="Dup",
        targets=[
            TargetIn(symbol="AAPL", weight=Decimal("0.5")),
            TargetIn(symbol="AAPL", weight=Decimal("0.5")),
        ],
    )
    with pytest.raises(InvalidInput, match="AAPL appears more than once"):
        async with unit_of_work(db, "t") as uow:
            await service.publish_model(uow, "dup", body, "pm", 1e-6)
