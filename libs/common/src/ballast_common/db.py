"""Async database access: one engine per service, its tables in its own Postgres schema."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from ballast_common import tenancy


class Database:
    """Engine and session factory; every connection's search_path is the service's schema."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 10) -> None:
        self.schema = schema
        self.engine: AsyncEngine = create_async_engine(
            async_url(url),
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={
                "server_settings": {
                    "search_path": schema,
                    "application_name": schema,
                    **tenancy.connection_settings(),
                }
            },
        )
        tenancy.install(self.engine)
        self.sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def async_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (as psql and the stack script print them)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url[len(plain) :]
    return url
