"""taxlot-svc: the book of record of cash, positions and tax lots."""

from pathlib import Path

from ballast_common.app import ServiceSpec, create_app
from ballast_common.consumer import Subscription

from taxlot_svc.api import router
from taxlot_svc.handlers import on_fills_received
from taxlot_svc.settings import Settings
from taxlot_svc.tables import metadata

spec = ServiceSpec(
    name="taxlot-svc",
    schema="taxlot",
    settings_type=Settings,
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    description=(
        "Book of record: cash, positions and tax lots. Records opening balances, applies "
        "fills-received (FIFO relief, realized gains) and publishes holdings-reconciled."
    ),
    routers=[router],
    subscriptions=[Subscription("fills-received", on_fills_received)],
)

app = create_app(spec)
