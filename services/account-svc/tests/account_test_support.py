"""What several of account-svc's tests set up the same way."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from account_svc import service
from ballast_common.contracts.events import ModelChangedV1, ModelTargetV1
from ballast_common.db import Database
from ballast_common.testing import unit_of_work


async def remember_models(
    db: Database, models: Iterable[tuple[str, str]], symbol: str = "AAPL"
) -> None:
    """Models account-svc knows, as model-changed leaves them: (tenant, model id) each, one
    security at weight 1."""
    async with unit_of_work(db, "test") as uow:
        for tenant, model_id in models:
            event = ModelChangedV1(
                model_id=model_id,
                name=model_id,
                version=1,
                changed_by="pm",
                targets=[ModelTargetV1(symbol=symbol, weight=Decimal(1))],
            )
            await service.remember_model(uow, tenant, event)
