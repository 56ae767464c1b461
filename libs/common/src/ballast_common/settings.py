"""Service settings: one env prefix per service, with shared `BALLAST_*` fallbacks.

`REBALANCE_SVC_DATABASE_URL` overrides `BALLAST_DATABASE_URL` for rebalance-svc only, so a
deployment sets the shared values once and overrides per service where it must.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

SHARED_ENV_PREFIX = "BALLAST_"


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclass with `model_config = service_config("X_SVC_")`."""

    model_config = SettingsConfigDict(env_prefix="SERVICE_", extra="ignore")

    database_url: str = "postgresql+asyncpg://ballast:ballast@127.0.0.1:15432/ballast"
    # The schema owner's URL, for migrations only (docs/auth.md, tenancy.py): a deployment
    # gives the service a role of its own in `database_url` that owns nothing. Empty: the
    # service migrates with `database_url`.
    database_owner_url: str = ""
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    # How the service authenticates to Kafka (docs/stack.md): PLAINTEXT without credentials,
    # or SASL_PLAINTEXT / SASL_SSL with its own SCRAM principal and password.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: SecretStr = SecretStr("")
    # Prepended to every topic and consumer group: lets tests and demos share one broker.
    topic_prefix: str = ""
    topic_partitions: int = 6
    topic_replication_factor: int = 1
    # Run Alembic migrations for this service's schema at start-up.
    migrate_on_start: bool = True
    log_level: str = "INFO"
    # OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318); tracing export is off if empty.
    otlp_endpoint: str = ""
    # Write finished spans as JSON lines to this file (local runs and tests); off if empty.
    trace_file: str = ""
    outbox_poll_interval_s: float = 0.2
    consumer_batch_size: int = 500
    # The largest request body a route takes (413 beyond it); a batch route may allow more.
    max_body_bytes: int = 1024 * 1024
    # The largest book-load file (`PUT /book-loads/{id}/files/{name}`, streamed to COPY).
    max_upload_bytes: int = 1024 * 1024 * 1024
    # What a 503 tells a client to wait (Retry-After) while the database or Kafka is down.
    retry_after_s: int = 2
    # Bearer tokens (docs/auth.md): the issuer and audience they must name, and where the
    # issuer publishes its keys (a JWKS URL, or a file such as the local issuer's
    # `.state/auth/jwks.json`). A service does not start without a JWKS.
    auth_issuer: str = "urn:ballast:local-issuer"
    auth_audience: str = "ballast"
    auth_jwks: str = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        shared = EnvSettingsSource(settings_cls, env_prefix=SHARED_ENV_PREFIX)
        return (init_settings, env_settings, shared, dotenv_settings, file_secret_settings)


def service_config(env_prefix: str) -> SettingsConfigDict:
    """The settings config for one service's prefix, e.g. `service_config("TAXLOT_SVC_")`."""
    return SettingsConfigDict(env_prefix=env_prefix, extra="ignore")
