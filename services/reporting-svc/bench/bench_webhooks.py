"""Webhooks at book scale (a benchmark, not a test).

1. Queuing: drift-detected batches (one event per account, as a model change's scan sends)
   go through `webhook_service.enqueue` in consumer-sized batches, first for a tenant with no
   subscription, then for one with two subscriptions to the type; prints the time per batch.
2. Sending: the dispatcher (as the service runs it) sends what was queued to a receiver on
   127.0.0.1 (uvicorn, answers 204) and prints deliveries per second.

    .venv/bin/python services/reporting-svc/bench/bench_webhooks.py --events 5000

Needs the local stack's PostgreSQL; uses a database of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import uvicorn
from ballast_common.consumer import Delivery
from ballast_common.db import Database
from ballast_common.testing import envelope, example, migrated_database, unit_of_work
from reporting_svc import repository as repo
from reporting_svc import webhook_service
from reporting_svc.dispatcher import WebhookDispatcher
from reporting_svc.main import spec
from reporting_svc.settings import Settings
from reporting_svc.webhooks import new_secret
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[3]


def stack(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stack.py"), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def database_url(name: str) -> str:
    env = dict(
        line[len("export ") :].split("=", 1) for line in stack("env").splitlines() if "=" in line
    )
    base = env["BALLAST_DATABASE_URL"].strip("'\"").rsplit("/", 1)[0]
    return f"{base}/{name}"


async def answer_204(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def drift_batch(tenant: str, size: int) -> list[Delivery]:
    events = []
    for _ in range(size):
        account = f"ACC-{uuid.uuid4().hex[:10]}"
        payload = example("drift-detected", account_id=account)
        event = envelope(payload, key=account, tenant=tenant)
        events.append(Delivery(event, payload, event.to_bytes()))  # as the consumer hands it
    return events


async def queue_batches(db: Database, tenant: str, events: int, batch: int) -> list[float]:
    times = []
    for _ in range(events // batch):
        deliveries = drift_batch(tenant, batch)
        started = time.perf_counter()
        async with unit_of_work(db, "bench") as uow:
            await webhook_service.enqueue(uow, deliveries)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def subscribe(db: Database, tenant: str, url: str) -> None:
    async with db.sessions() as session, session.begin():
        await repo.insert_webhook_subscription(
            session,
            id=uuid.uuid4(),
            tenant=tenant,
            url=url,
            event_types=["drift-detected"],
            description="bench",
            secret=new_secret(),
            created_by="bench",
        )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    name = f"ballast_bench_webhooks_{uuid.uuid4().hex[:6]}"
    stack("createdb", name)
    url = database_url(name)
    db = await migrated_database(spec, url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    receiver = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    server = uvicorn.Server(
        uvicorn.Config(answer_204, lifespan="off", log_level="warning", access_log=False)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    result: dict[str, Any] = {"events": args.events, "batch": args.batch}
    try:
        unsubscribed = await queue_batches(db, "nobody", args.events, args.batch)
        result["queue_batch_no_subscription_median_ms"] = round(statistics.median(unsubscribed), 2)
        await subscribe(db, "sponsor", receiver)
        await subscribe(db, "sponsor", receiver + "?second")
        subscribed = await queue_batches(db, "sponsor", args.events, args.batch)
        result["queue_batch_two_subscriptions_median_ms"] = round(statistics.median(subscribed), 2)
        total = 2 * (args.events // args.batch) * args.batch
        settings = Settings(database_url=url, webhook_concurrency=args.concurrency)
        settings.webhook_claim_batch = args.claim
        dispatcher = WebhookDispatcher(db, settings)
        started = time.perf_counter()
        sending = asyncio.create_task(dispatcher.run())
        async with db.engine.connect() as conn:
            while True:
                left = (
                    await conn.execute(
                        text("SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'")
                    )
                ).scalar_one()
                await conn.commit()
                if left == 0:
                    break
                await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        result["delivered"] = total
        result["send_s"] = round(elapsed, 2)
        result["deliveries_per_s"] = round(total / elapsed)
        return result
    finally:
        server.should_exit = True
        await serving
        await db.dispose()
        stack("dropdb", name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench_webhooks.py")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--claim", type=int, default=32)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
