"""model-hub-svc: the security master, models and their versions, equivalence sets."""

from pathlib import Path

from ballast_common import audit
from ballast_common.app import ServiceSpec, create_app
from ballast_common.auth import Permission
from ballast_common.book_loads import BookLoadSpec
from ballast_common.contracts.book_files import files_of

from model_hub_svc import service
from model_hub_svc.api import router
from model_hub_svc.handlers import subscriptions
from model_hub_svc.settings import Settings
from model_hub_svc.tables import book_loads, metadata

settings = Settings()
spec = ServiceSpec(
    name="model-hub-svc",
    schema="model_hub",
    settings_type=Settings,
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    description="Security master, models and versions, equivalence sets. Publishes "
    "securities-changed, model-changed and equivalence-set-changed; follows "
    "corporate-action-recorded.",
    routers=[
        router,
        audit.trail_router("Changes of models, equivalence sets and the security master"),
    ],
    subscriptions=subscriptions(settings),
    # Platform-wide, like the security master: `tenant` records who made a set.
    shared_tables=frozenset({"equivalence_sets"}),
    book_load=BookLoadSpec(
        files=files_of("model-hub-svc"),
        table=book_loads,
        checks=service.check_book_load,
        apply=service.apply_book_load,
        permission=Permission.MANAGE_PLATFORM,  # it loads the shared security master
    ),
)

app = create_app(spec, settings)
