"""taxlot-svc: the book of record of cash, positions and tax lots."""

from pathlib import Path

from ballast_common import audit
from ballast_common.app import ServiceSpec, create_app

from taxlot_svc import (
    book_load,
    custodian_day,
    custodian_files_api,
    custodian_monitor,
    custodian_monitor_api,
    unknown_securities_api,
)
from taxlot_svc.api import router
from taxlot_svc.handlers import subscriptions
from taxlot_svc.settings import Settings
from taxlot_svc.snapshots import snapshot_loop
from taxlot_svc.tables import metadata

settings = Settings()
spec = ServiceSpec(
    name="taxlot-svc",
    schema="taxlot",
    settings_type=Settings,
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    description=(
        "Book of record: cash, positions and tax lots. Records opening balances, applies "
        "fills-received (relief by the account's method from account-changed, or named "
        "lots; wash sales across the household, identical equivalence sets included), "
        "corporate actions (publishing corporate-action-recorded) and sleeve transfers, and "
        "publishes holdings-reconciled (v2, with lots); realized and unrealized gains, Form "
        "8949 and wash-sale blocks over REST; loads opening books from files (/book-loads);"
        " reconciles a custodian's day lot by lot (/custodian-days, /reconciliations, /breaks);"
        " monitors the custodians' file sets by their deadlines (/custodian-days/exceptions)."
    ),
    routers=[
        router,
        custodian_monitor_api.router,
        unknown_securities_api.router,
        custodian_files_api.router,
        audit.trail_router("Opening balances, corporate actions, sleeve and sleeve-cash transfers"),
    ],
    subscriptions=subscriptions(settings),
    background=[snapshot_loop, custodian_monitor.monitor_loop],
    book_load=book_load.SPEC,
    file_loads=[custodian_day.spec(settings)],
)

app = create_app(spec, settings)
