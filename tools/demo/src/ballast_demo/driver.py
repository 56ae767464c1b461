"""Drives a running Ballast over its public REST APIs: load a book, change a model, follow
the run to the end. Used by `make demo`, `make bench-flow` and the integration tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from ballast_cli.book import Outcome, Reporter, load_folder
from ballast_cli.custodian import day_files, reconcile_day
from ballast_cli.retrying import DEFAULT_RETRY, RetryPolicy, send
from ballast_common.auth import LocalIssuer, Role, local_issuer
from ballast_common.custodian_files import adapter_for

from ballast_demo.book import (
    EQUIVALENCE_SETS,
    SECURITY_LISTS,
    Account,
    ModelSpec,
    model_body,
    security_rows,
)
from ballast_demo.files import write_book

Progress = Callable[[int], None]  # called with how many items are done so far


class DriverError(Exception):
    """A step of the flow failed or did not finish in time; the message says which."""


@dataclass(frozen=True)
class Urls:
    account: str
    model_hub: str
    rebalance: str
    taxlot: str
    gateway: str
    reporting: str
    custodian: str

    @classmethod
    def on_port_base(cls, base: int, host: str = "127.0.0.1") -> Urls:
        def url(offset: int) -> str:
            return f"http://{host}:{base + offset}"

        return cls(url(1), url(2), url(3), url(4), url(5), url(6), url(9))


@dataclass(frozen=True)
class Persona:
    """Who the driver acts as for a step: the token's subject and roles."""

    subject: str
    role: Role
    also: tuple[Role, ...] = ()


OPERATIONS = Persona("ops@demo", Role.OPERATIONS)  # loads books, starts runs, reads
MODEL_MANAGER = Persona("pm@demo", Role.MODEL_MANAGER)  # models
# what every tenant shares: the security master, equivalence sets, corporate actions
PLATFORM_OPERATOR = Persona("platform@demo", Role.PLATFORM_OPERATOR)
OVERLAY_MANAGER = Persona("overlay@demo", Role.OVERLAY_MANAGER)  # accounts' settings and lists
# a book folder holds the security master's files too (model-hub-svc's load needs the platform)
BOOK_LOADER = Persona("ops@demo", Role.OPERATIONS, also=(Role.PLATFORM_OPERATOR,))
TOKEN_TTL_S = 8 * 3600  # a working day


def persona_token(issuer: LocalIssuer, persona: Persona, tenant: str = "demo") -> str:
    """A bearer token of the local issuer for `persona` of `tenant`."""
    return issuer.issue(tenant, [persona.role, *persona.also], persona.subject, ttl_s=TOKEN_TTL_S)


class Ballast:
    """The running services, called as the demo tenant's people with tokens of `issuer`."""

    def __init__(
        self,
        urls: Urls,
        issuer: LocalIssuer | None = None,
        timeout_s: float = 30.0,
        tenant: str = "demo",
        say: Callable[[str], None] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.urls = urls
        self.say = say  # told what a call waits for while a service restarts
        self.retry = retry
        self.issuer = issuer or local_issuer()
        self.tenant = tenant
        self.http = httpx.AsyncClient(timeout=timeout_s)
        self._tokens: dict[Persona, str] = {}

    async def close(self) -> None:
        await self.http.aclose()

    def token(self, persona: Persona = OPERATIONS) -> str:
        """A bearer token for `persona` of the tenant (made once per driver)."""
        if persona not in self._tokens:
            self._tokens[persona] = persona_token(self.issuer, persona, self.tenant)
        return self._tokens[persona]

    def headers(self, persona: Persona = OPERATIONS) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(persona)}"}

    async def _call(self, method: str, url: str, as_: Persona = OPERATIONS, **kwargs: Any) -> Any:
        headers = {**self.headers(as_), **kwargs.pop("headers", {})}
        if method != "GET":  # the same key on every retry: the change runs once
            headers = {"Idempotency-Key": str(uuid.uuid4()), **headers}
        try:
            response = await send(
                self.http, method, url, policy=self.retry, say=self.say, headers=headers, **kwargs
            )
        except httpx.TransportError as exc:
            raise DriverError(
                f"{method} {url}: {exc.__class__.__name__} {exc} (still, after retrying for "
                f"{self.retry.budget_s:.0f} s): is the service running?"
            ) from None
        if response.status_code >= 400:
            raise DriverError(f"{method} {url} -> {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    async def load_securities(self) -> int:
        body = {"securities": security_rows()}
        return int(
            (
                await self._call(
                    "PUT", f"{self.urls.model_hub}/securities", PLATFORM_OPERATOR, json=body
                )
            )["upserted"]
        )

    async def load_more_securities(self, rows: Sequence[dict[str, object]]) -> int:
        """Securities beyond the demo's own (e.g. a direct index's names)."""
        url = f"{self.urls.model_hub}/securities"
        answer = await self._call("PUT", url, PLATFORM_OPERATOR, json={"securities": list(rows)})
        return int(answer["upserted"])

    async def publish_model_body(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A new version of a model given as model-hub-svc's request body."""
        url = f"{self.urls.model_hub}/models/{model_id}"
        return dict(await self._call("PUT", url, MODEL_MANAGER, json=body))

    async def load_reference_sets(self) -> int:
        """The book's equivalence sets (model-hub-svc) and restriction lists (account-svc)."""
        for set_id, (name, members, identical) in EQUIVALENCE_SETS.items():
            body = {"name": name, "members": members, "identical": identical}
            url = f"{self.urls.model_hub}/equivalence-sets/{set_id}"
            await self._call("PUT", url, PLATFORM_OPERATOR, json=body)
        for list_id, (name, symbols) in SECURITY_LISTS.items():
            body = {"name": name, "symbols": symbols}
            url = f"{self.urls.account}/security-lists/{list_id}"
            await self._call("PUT", url, OVERLAY_MANAGER, json=body)
        return len(EQUIVALENCE_SETS) + len(SECURITY_LISTS)

    async def publish_model(self, model: ModelSpec) -> dict[str, Any]:
        """A new version of `model`, changed by the model manager."""
        return await self._call(
            "PUT",
            f"{self.urls.model_hub}/models/{model.model_id}",
            MODEL_MANAGER,
            json=model_body(model),
        )

    async def wait_for_models(self, model_ids: Sequence[str], timeout_s: float = 60) -> None:
        """Until account-svc knows the models (it learns them from model-changed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            listed = await self._call("GET", f"{self.urls.account}/models", params={"limit": 5000})
            known = {m["model_id"] for m in listed["items"]}
            missing = sorted(set(model_ids) - known)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise DriverError(f"account-svc has not heard of model(s) {missing}")
            await asyncio.sleep(0.2)

    async def load_book(
        self,
        accounts: Sequence[Account],
        root: Path,
        as_of: date | None = None,
        reporter: Reporter | None = None,
        more_securities: Mapping[str, tuple[str, str, str, str]] | None = None,
    ) -> Outcome:
        """Write the accounts as a book file set under `root` and load it with
        `ballast book load` (once account-svc knows the models they follow), and into the
        custodian simulator. `more_securities`: securities beyond the demo's own."""
        folder = write_book(accounts, root, as_of or date.today(), more_securities)
        models = {a.model_id for a in accounts if a.model_id} | {
            m for a in accounts for _, m, _ in a.sleeves
        }
        await self.wait_for_models(sorted(models))
        urls = {
            "model-hub-svc": self.urls.model_hub,
            "account-svc": self.urls.account,
            "taxlot-svc": self.urls.taxlot,
        }
        outcome = await load_folder(folder, urls, token=self.token(BOOK_LOADER), reporter=reporter)
        if outcome.problems:
            raise DriverError(f"the book in {folder} is not valid: {outcome.problems[:5]}")
        await self.load_custodian_book(folder)
        return outcome

    async def load_custodian_book(self, folder: Path) -> None:
        """The custodian holds the same book, and books the fills' allocations against it.
        The simulator holds one book: when a system loads a second (the integration tests
        do), the custodian keeps its first and refuses the newcomers' allocations, saying so
        in the gateway's log; the flow itself does not depend on them."""
        url = f"{self.urls.custodian}/book"
        held = await send(self.http, "GET", url, policy=self.retry, say=self.say)
        if held.status_code == 404:
            await self._call("POST", url, json={"folder": str(folder)})

    async def read_model(self) -> dict[str, int]:
        return await self._call("GET", f"{self.urls.rebalance}/read-model")

    async def wait_until_known(
        self,
        accounts: int,
        securities: int,
        progress: Progress | None = None,
        timeout_s: float = 180,
    ) -> None:
        """Wait until rebalance-svc's read model holds every account's holdings."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = await self.read_model()
            if progress:
                progress(state["accounts_with_holdings"])
            if (
                state["accounts_with_holdings"] >= accounts
                and state["accounts"] >= accounts
                and state["securities"] >= securities
            ):
                return
            if time.monotonic() > deadline:
                raise DriverError(f"rebalance-svc knows only {state} after {timeout_s:.0f}s")
            await asyncio.sleep(0.5)

    async def wait_for_run(
        self, model_id: str, version: int, timeout_s: float = 120
    ) -> dict[str, Any]:
        """The model version's run, once every chunk of it is done (its totals are final)."""
        deadline = time.monotonic() + timeout_s
        while True:
            runs = (
                await self._call(
                    "GET",
                    f"{self.urls.rebalance}/runs",
                    params={"model_id": model_id, "model_version": version},
                )
            )["items"]
            if runs:
                return await self.wait_for_chunks(runs[0]["run_id"], deadline)
            if time.monotonic() > deadline:
                raise DriverError(
                    f"no rebalance run for {model_id} v{version} after {timeout_s:.0f}s"
                )
            await asyncio.sleep(0.2)

    async def wait_until_settled(self, timeout_s: float = 120) -> None:
        """Until rebalance-svc has seen every trade it proposed settle (filled and in the book
        of record, or rejected): until then it does not trade those accounts again."""
        deadline = time.monotonic() + timeout_s
        while (await self.read_model())["trades_in_flight"]:
            if time.monotonic() > deadline:
                raise DriverError(f"rebalance-svc still waits for trades after {timeout_s:.0f}s")
            await asyncio.sleep(0.3)

    async def wait_for_chunks(self, run_id: str, deadline: float) -> dict[str, Any]:
        """rebalance-svc's run once all its chunks are done."""
        while True:
            run = await self._call("GET", f"{self.urls.rebalance}/runs/{run_id}")
            if run["complete"]:
                return dict(run)
            if time.monotonic() > deadline:
                raise DriverError(
                    f"run {run_id}: {run['chunks_done']} of {run['chunks']} chunks done in time"
                )
            await asyncio.sleep(0.2)

    async def harvest(self, timeout_s: float = 120) -> dict[str, Any]:
        """A tax-loss harvest over the accounts that have harvesting on, once it is done."""
        run = await self._call("POST", f"{self.urls.rebalance}/harvests", json={})
        return await self.wait_for_chunks(run["run_id"], time.monotonic() + timeout_s)

    async def proposals_of_run(self, run_id: str) -> list[dict[str, Any]]:
        """account-svc's proposals of a run (the tenant's proposals, paged, kept if of it)."""
        found, offset = [], 0
        while True:
            page = await self._call(
                "GET", f"{self.urls.account}/proposals", params={"limit": 500, "offset": offset}
            )
            found += [p for p in page["items"] if p["run_id"] == run_id]
            if page.get("next_offset") is None:
                return found
            offset = page["next_offset"]

    async def run_progress(self, run_id: str) -> dict[str, Any]:
        return await self._call("GET", f"{self.urls.reporting}/runs/{run_id}")

    async def wait_until_complete(
        self,
        run: dict[str, Any],
        progress: Callable[[dict[str, Any]], None] | None = None,
        timeout_s: float = 600,
        measured: bool = True,
    ) -> dict[str, Any]:
        """Wait until reporting-svc has seen every account (if the run `measured` drift) and
        trade of the run (the totals come from rebalance-svc), every trade is filled or
        rejected, and every fill has reached the book of record."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while True:
            response = await self.http.get(
                f"{self.urls.reporting}/runs/{run['run_id']}", headers=self.headers()
            )
            if response.status_code == 200:
                last = response.json()
                if progress:
                    progress(last)
                if (
                    last["complete"]
                    and last["trades"] == run["trades"]
                    and (not measured or last["accounts_measured"] == run["accounts_evaluated"])
                ):
                    return last
            elif response.status_code != 404:
                raise DriverError(f"run progress failed: {response.status_code} {response.text}")
            if time.monotonic() > deadline:
                raise DriverError(
                    f"run {run['run_id']} not complete after {timeout_s:.0f}s: {last}"
                )
            await asyncio.sleep(0.3)

    async def gateway_stats(self) -> dict[str, Any]:
        return await self._call("GET", f"{self.urls.gateway}/stats")

    async def custodian_stats(self) -> dict[str, Any]:
        return await self._call("GET", f"{self.urls.custodian}/stats")

    async def wait_until_booked(self, timeout_s: float = 120) -> dict[str, int]:
        """Until the gateway has no allocation waiting to be booked at the custodian; the
        allocations by booking outcome."""
        deadline = time.monotonic() + timeout_s
        while True:
            booking = dict((await self.gateway_stats())["allocations"]["booking"])
            if not booking.get("pending"):
                return booking
            if time.monotonic() > deadline:
                raise DriverError(f"allocations still pending after {timeout_s:.0f}s: {booking}")
            await asyncio.sleep(0.3)

    async def custodian_files(self, day: date) -> Path:
        """The custodian simulator's file set for `day` (its book at that day's close)."""
        written = await self._call("POST", f"{self.urls.custodian}/files/{day.isoformat()}")
        return Path(written["folder"])

    async def reconcile_custodian_day(
        self, folder: Path, day: date
    ) -> tuple[Outcome, list[dict[str, Any]]]:
        """A custodian's day folder (`<custodian>/<date>/`) uploaded to taxlot-svc and
        reconciled, as `ballast custodian reconcile` does; the outcome and the first breaks."""
        custodian = folder.parent.name
        try:
            files = day_files(folder, adapter_for(custodian), custodian, day)
        except (KeyError, OSError) as exc:
            raise DriverError(f"the custodian's files in {folder}: {exc}") from None
        outcome, first = await reconcile_day(
            files, custodian, self.urls.taxlot, token=self.token(), retry=self.retry
        )
        if outcome.problems:
            raise DriverError(f"taxlot-svc refused the day in {folder}: {outcome.problems[:5]}")
        return outcome, first

    async def events_processed(self) -> int:
        """Events all six services' consumers processed, from their Prometheus metrics."""
        total = 0.0
        for url in (
            self.urls.account,
            self.urls.model_hub,
            self.urls.rebalance,
            self.urls.taxlot,
            self.urls.gateway,
            self.urls.reporting,
        ):
            text = (await self.http.get(f"{url}/metrics")).text
            for line in text.splitlines():
                if (
                    line.startswith("ballast_events_consumed_total{")
                    and 'outcome="processed"' in line
                ):
                    total += float(line.rsplit(" ", 1)[1])
        return int(total)
