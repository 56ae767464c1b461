"""Who is calling and what they may do: OAuth2 bearer tokens (JWTs) checked against an
issuer's published keys, the tenant and roles they carry, and the permission matrix.

A token is accepted only when it is signed with one of the fixed algorithms by a key of the
issuer's JWKS named by the token's ``kid`` (an unknown ``kid`` refreshes the JWKS once a
minute at most, so keys rotate without restarts), names the configured issuer and audience,
and carries ``sub``, ``exp``, ``iat``, a ``tenant`` and known ``roles``. The tenant and the
actor come from the token only.

:class:`LocalIssuer` is a small issuer for the demo and the tests (``ballast auth token``);
in production any OIDC provider whose tokens carry the two claims does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from ballast_common.errors import BallastError, Forbidden

ALGORITHMS = ("ES256", "RS256")
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud", "tenant", "roles")
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LOCAL_ISSUER = "urn:ballast:local-issuer"  # the local issuer's name (demo and tests)
AUDIENCE = "ballast"  # the audience every Ballast service expects by default


class Role(StrEnum):
    ADVISOR = "advisor"
    MODEL_MANAGER = "model-manager"
    OVERLAY_MANAGER = "overlay-manager"
    COMPLIANCE = "compliance"
    OPERATIONS = "operations"
    ADMIN = "admin"
    SPONSOR = "sponsor"  # a sponsor platform: reads only


class Permission(StrEnum):
    READ = "read"  # every read of the tenant's data
    MANAGE_MODELS = "models:write"  # models, the security master, equivalence sets
    MANAGE_ACCOUNTS = "accounts:write"  # accounts, their settings and restrictions, cash
    DECIDE_PROPOSALS = "proposals:decide"  # approve, reject or edit a proposal
    START_RUNS = "runs:start"  # scans, harvests, manual rebalances
    LOAD_BOOKS = "books:load"  # book loads, opening balances, corporate actions
    OPERATE = "operations"  # dead letters, replays, custodian operations
    ADMINISTER = "admin"  # what changes the platform for every user of the tenant


_READS = frozenset({Permission.READ})
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.SPONSOR: _READS,
    Role.ADVISOR: _READS | {Permission.MANAGE_ACCOUNTS},
    Role.MODEL_MANAGER: _READS | {Permission.MANAGE_MODELS},
    Role.OVERLAY_MANAGER: _READS
    | {Permission.MANAGE_ACCOUNTS, Permission.DECIDE_PROPOSALS, Permission.START_RUNS},
    Role.COMPLIANCE: _READS | {Permission.DECIDE_PROPOSALS},
    Role.OPERATIONS: _READS | {Permission.LOAD_BOOKS, Permission.OPERATE, Permission.START_RUNS},
    Role.ADMIN: frozenset(Permission),
}


class Unauthorized(BallastError):
    """No token, or one that is not valid: the caller is not known (401)."""

    status = 401
    title = "Unauthorized"


@dataclass(frozen=True)
class Principal:
    """The caller a valid token names."""

    subject: str  # the actor: who makes a change, as recorded
    tenant: str
    roles: frozenset[Role]
    token_id: str | None = None

    def can(self, permission: Permission) -> bool:
        return any(permission in PERMISSIONS[r] for r in self.roles)

    def require(self, permission: Permission) -> Principal:
        """This principal, if one of its roles grants ``permission``; else 403."""
        if not self.can(permission):
            roles = ", ".join(sorted(self.roles)) or "none"
            raise Forbidden(f"{permission.value} is not granted to the roles {roles}")
        return self


@dataclass(frozen=True)
class AuthSettings:
    issuer: str
    audience: str
    jwks: str  # a JWKS document's URL (http/https) or file path
    leeway_s: int = 30  # clock skew allowed on exp, iat and nbf
    refresh_after_s: float = 60.0  # an unknown kid fetches the JWKS again at most this often


KeysFetcher = Callable[[], Awaitable[dict[str, Any]]]


class TokenVerifier:
    """Checks bearer tokens against the issuer's JWKS (kept, refreshed on an unknown kid)."""

    def __init__(self, settings: AuthSettings, fetch: KeysFetcher | None = None) -> None:
        self.settings = settings
        self._fetch = fetch or jwks_fetcher(settings.jwks)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; :class:`Unauthorized` naming what is wrong."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the bearer token is not a JWT: {exc}") from exc
        if header.get("alg") not in ALGORITHMS:
            raise Unauthorized(f"token algorithm {header.get('alg')!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("the token names no signing key (kid)")
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name] if key.algorithm_name else list(ALGORITHMS),
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the bearer token is not valid: {exc}") from exc
        return principal_of(claims)

    async def _key(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys and (
            time.monotonic() - self._fetched_at >= self.settings.refresh_after_s
        ):
            self._fetched_at = time.monotonic()
            try:
                self._keys = keys_of(await self._fetch())
            except (OSError, ValueError, httpx.HTTPError, jwt.PyJWTError) as exc:
                raise Unauthorized(f"the issuer's keys cannot be read: {exc}") from exc
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized(f"the token's signing key {kid!r} is not one of the issuer's")
        return key


def principal_of(claims: dict[str, Any]) -> Principal:
    """The principal of a token's verified claims (tenant and roles checked)."""
    tenant, roles = claims.get("tenant"), claims.get("roles")
    if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
        raise Unauthorized("the token's tenant claim is not a tenant id")
    if not isinstance(roles, list) or not roles:
        raise Unauthorized("the token's roles claim is not a list of roles")
    known = {r.value for r in Role}
    unknown = [r for r in roles if r not in known]
    if unknown:
        raise Unauthorized(f"the token names unknown roles {unknown}; known: {sorted(known)}")
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("the token's subject (sub) is empty")
    jti = claims.get("jti")
    return Principal(subject, tenant, frozenset(Role(r) for r in roles), jti)


def keys_of(jwks: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWKS document by kid (keys of other uses or algorithms skipped)."""
    out: dict[str, jwt.PyJWK] = {}
    for data in jwks.get("keys", []):
        if data.get("use", "sig") != "sig" or not data.get("kid"):
            continue
        if data.get("alg") is not None and data["alg"] not in ALGORITHMS:
            continue
        out[data["kid"]] = jwt.PyJWK(data)
    return out


def jwks_fetcher(source: str) -> KeysFetcher:
    """Reads a JWKS from a URL or a file."""

    async def fetch() -> dict[str, Any]:
        if source.startswith(("http://", "https://")):
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(source)
                response.raise_for_status()
                document: dict[str, Any] = response.json()
                return document
        text = await asyncio.to_thread(Path(source).read_text)
        loaded: dict[str, Any] = json.loads(text)
        return loaded

    return fetch


# --------------------------------------------------------------------------------------------
# The local issuer


class LocalIssuer:
    """Signs tokens with an ES256 key kept in ``folder`` (``signing-key.pem``, the newest)
    and publishes every key it ever signed with in ``jwks.json``, so tokens signed before a
    :meth:`rotate` keep verifying until they expire."""

    def __init__(self, folder: Path, issuer: str, audience: str) -> None:
        self.folder = folder
        self.issuer = issuer
        self.audience = audience

    @property
    def jwks_path(self) -> Path:
        return self.folder / "jwks.json"

    def ensure_key(self) -> str:
        """The current key's kid, made (with its JWKS) the first time."""
        if not (self.folder / "signing-key.pem").exists():
            return self.rotate()
        return self._kid_of(self._private_key())

    def rotate(self) -> str:
        """A new signing key; the old ones stay in the JWKS. Returns the new kid."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = self.folder / "signing-key.pem"
        path.write_bytes(pem)
        path.chmod(0o600)
        kid = self._kid_of(key)
        keys = json.loads(self.jwks_path.read_text())["keys"] if self.jwks_path.exists() else []
        keys.append({**self._public_jwk(key), "kid": kid, "use": "sig", "alg": "ES256"})
        self.jwks_path.write_text(json.dumps({"keys": keys}, indent=2))
        return kid

    def issue(
        self,
        tenant: str,
        roles: Iterable[Role | str],
        subject: str,
        ttl_s: int = 3600,
    ) -> str:
        """A signed token for ``subject`` of ``tenant`` with ``roles``, valid ``ttl_s``."""
        kid = self.ensure_key()
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": str(uuid.uuid4()),
            "tenant": tenant,
            "roles": [Role(r).value for r in roles],
        }
        return jwt.encode(claims, self._private_key(), algorithm="ES256", headers={"kid": kid})

    def _private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(
            (self.folder / "signing-key.pem").read_bytes(), password=None
        )
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.folder / 'signing-key.pem'} is not an EC private key")
        return key

    @staticmethod
    def _public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return jwk

    @classmethod
    def _kid_of(cls, key: ec.EllipticCurvePrivateKey) -> str:
        """The RFC 7638 thumbprint of the public key."""
        jwk = cls._public_jwk(key)
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
        digest = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
