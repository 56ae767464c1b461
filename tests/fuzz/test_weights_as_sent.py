"""A model's weights are stored and published as sent (issue 10: stored with 10 decimals but
published with 32): model-hub-svc takes up to the 10 decimals it stores and refuses more,
naming the field; what it stores, answers and publishes are the same numbers."""

import uuid
from decimal import Decimal

import pytest
from ballast_common.testing import api_client, migrated_database, outbox_events
from model_hub_svc.main import spec

pytestmark = pytest.mark.integration


async def test_weights_are_stored_answered_and_published_as_sent(database_url):
    db = await migrated_database(spec, database_url)
    model_id = f"thirds-{uuid.uuid4().hex[:8]}"
    securities = [
        {"symbol": s, "name": s, "asset_class": "US Equity", "sector": "X", "price": "100.25"}
        for s in ("AAA", "BBB", "CCC")
    ]
    weights = {"AAA": "0.3333333333", "BBB": "0.3333333333", "CCC": "0.3333333334"}
    body = {"name": "Thirds", "targets": [{"symbol": s, "weight": w} for s, w in weights.items()]}
    async with api_client(spec, db) as api:
        assert (await api.put("/securities", json={"securities": securities})).status_code == 200
        too_fine = {**body, "targets": [{"symbol": "AAA", "weight": "0.33333333333"}]}
        refused = await api.put(f"/models/{model_id}", json=too_fine)
        published = await api.put(f"/models/{model_id}", json=body)
        read = await api.get(f"/models/{model_id}")
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["targets[0].weight"]
    assert published.status_code == 201, published.text
    answered = {t["symbol"]: Decimal(t["weight"]) for t in read.json()["targets"]}
    (event,) = await outbox_events(db, "model-changed", model_id)
    sent = {t.symbol: t.weight for t in event.payload.targets}
    assert answered == sent == {s: Decimal(w) for s, w in weights.items()}
    await db.dispose()
