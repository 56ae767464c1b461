"""A tiny service used only by libs/common's tests: it records notes from `account-changed`."""

from pathlib import Path

from ballast_common.app import ServiceSpec
from ballast_common.book_loads import define_book_loads
from ballast_common.settings import ServiceSettings
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class Table(SQLModel, registry=registry()):
    pass


class Note(Table, table=True):
    __tablename__ = "notes"

    id: int | None = Field(default=None, primary_key=True)
    account_id: str
    text: str


book_loads = define_book_loads(Table.metadata)


def make_spec(schema: str) -> ServiceSpec:
    return ServiceSpec(
        name="probe-svc",
        schema=schema,
        settings_type=ServiceSettings,
        metadata=Table.metadata,
        migrations_dir=Path(__file__).parent / "migrations",
    )
