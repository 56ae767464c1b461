"""The MetaData of the tables libs/common adds to every service's schema (outbox, inbox,
idempotency keys), so migrations compare them with the service's own tables."""

from sqlalchemy import MetaData

common_metadata = MetaData()
