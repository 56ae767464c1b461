"""account-svc: households, accounts, their model and approval policy; trade approvals."""

from pathlib import Path

from ballast_common import audit
from ballast_common.app import ServiceSpec, create_app

from account_svc.account_opening_api import router as account_opening_router
from account_svc.api import router
from account_svc.book_load import BOOK_LOAD
from account_svc.bulk_changes_api import router as bulk_changes_router
from account_svc.filters_api import router as filters_router
from account_svc.handlers import subscriptions
from account_svc.proposal_review_api import router as proposal_review_router
from account_svc.settings import Settings
from account_svc.strategies_api import router as strategies_router
from account_svc.tables import metadata

settings = Settings()
spec = ServiceSpec(
    name="account-svc",
    schema="account",
    settings_type=Settings,
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    description="Accounts, households, approval policy; approves proposed trades.",
    routers=[
        router,
        filters_router,
        bulk_changes_router,
        strategies_router,
        proposal_review_router,
        account_opening_router,
        audit.trail_router(
            "Changes of accounts, their settings, restrictions and strategies, security lists "
            "and proposal decisions"
        ),
    ],
    book_load=BOOK_LOAD,
    subscriptions=subscriptions(settings),
)

app = create_app(spec, settings)
