"""reporting-svc's approval routes forward to account-svc, which is not running here: they
forward to a stand-in that answers every request 200 `{}`, so what is fuzzed is reporting-svc's
own surface (its validation, its guards, the forwarding). account-svc is fuzzed on its own."""

from __future__ import annotations

import httpx
import pytest
from reporting_svc.approvals_api import AccountSvc
from reporting_svc.settings import Settings


def _stand_in(cls: type[AccountSvc], settings: Settings) -> AccountSvc:
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json={})),
        base_url="http://account-svc.stand-in",
    )
    return cls(client, settings.account_svc_timeout_s, settings.retry_after_s)


@pytest.fixture(autouse=True)
def account_svc_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AccountSvc, "from_settings", classmethod(_stand_in))
