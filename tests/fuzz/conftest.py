"""reporting-svc's dashboard routes that belong to other services (approvals: account-svc;
breaks and exceptions: taxlot-svc) forward to them, and they are not running here: every
forwarder gets a stand-in that answers each request 200 `{}`, so what is fuzzed is
reporting-svc's own surface (its validation, its guards, the forwarding). account-svc and
taxlot-svc are fuzzed on their own."""

from __future__ import annotations

import httpx
import pytest
from reporting_svc.forwarding import Forwarder
from reporting_svc.settings import Settings


def _stand_in(cls: type[Forwarder], settings: Settings) -> Forwarder:
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json={})),
        base_url=f"http://{cls.service}.stand-in",
    )
    return cls(client, cls.url_and_timeout(settings)[1], settings.retry_after_s)


@pytest.fixture(autouse=True)
def forwarded_services_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Forwarder, "from_settings", classmethod(_stand_in))
