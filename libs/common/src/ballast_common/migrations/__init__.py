"""Alembic migrations, one schema per service, from one shared environment.

A service keeps only its revision files (in `<service>/migrations/`); this package holds
the Alembic environment they all run in. `python -m ballast_common.migrations` is the CLI
(`revision` to autogenerate a new revision against a running database, `upgrade`).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, MetaData, text

ENV_DIR = Path(__file__).parent


def alembic_config(
    schema: str, versions_dir: Path, metadata: MetaData, url: str | None = None
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ENV_DIR))
    config.set_main_option("version_locations", str(versions_dir))
    config.set_main_option("path_separator", "os")
    config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(slug)s_%%(rev)s")
    if url:
        config.set_main_option("sqlalchemy.url", url)
    config.attributes["schema"] = schema
    config.attributes["target_metadata"] = metadata
    return config


def upgrade_connection(
    connection: Connection, schema: str, versions_dir: Path, metadata: MetaData
) -> None:
    """Bring `schema` to head on an open (sync-facade) connection, one migrator at a time."""
    lock = text("SELECT pg_advisory_xact_lock(hashtext(:n))")
    connection.execute(lock, {"n": f"migrate:{schema}"})
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
    config = alembic_config(schema, versions_dir, metadata)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
