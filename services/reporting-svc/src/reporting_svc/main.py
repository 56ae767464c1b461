"""reporting-svc: read models fed by every other service's events, REST reports and the
web dashboard (static HTML, CSS and vanilla JS calling this service's own API)."""

from pathlib import Path

from ballast_common.app import ServiceSpec, create_app
from fastapi.staticfiles import StaticFiles

from reporting_svc.api import STATIC_DIR, router
from reporting_svc.approvals_api import router as approvals_router
from reporting_svc.dispatcher import webhook_dispatcher
from reporting_svc.exceptions_api import router as exceptions_router
from reporting_svc.forwarding import close_forwarder_clients
from reporting_svc.handlers import subscriptions
from reporting_svc.settings import Settings
from reporting_svc.tables import metadata
from reporting_svc.webhooks_api import router as webhooks_router

settings = Settings()
spec = ServiceSpec(
    name="reporting-svc",
    schema="reporting",
    settings_type=Settings,
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    description="Read models of holdings, trades and rebalance runs; REST reports; dashboard.",
    routers=[router, webhooks_router, approvals_router, exceptions_router],
    subscriptions=subscriptions(settings),
    background=[webhook_dispatcher, close_forwarder_clients],
)

app = create_app(spec, settings)
app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
