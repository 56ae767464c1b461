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
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts
from jwt.algorithms import ECAlgorithm

from ballast_common import tenancy
from ballast_common.errors import BallastError, FieldProblem, Forbidden, InvalidInput

ALGORITHMS = ("ES256", "RS256")
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud", "tenant", "roles")
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LOCAL_ISSUER = "urn:ballast:local-issuer"  # the local issuer's name (demo and tests)
AUDIENCE = "ballast"  # the audience every Ballast service expects by default
MAX_SUBJECT_LENGTH = 200  # as `changed_by`, `decided_by` columns keep it
FAILED_FETCH_RETRY_S = 2.0  # an unreadable JWKS is read again this soon
# Headers that once named the caller: the token does now, and a request naming them is refused.
CLAIMED_IDENTITY_HEADERS = ("X-Tenant", "X-Actor")


class Role(StrEnum):
    ADVISOR = "advisor"
    MODEL_MANAGER = "model-manager"
    OVERLAY_MANAGER = "overlay-manager"
    COMPLIANCE = "compliance"
    OPERATIONS = "operations"
    ADMIN = "admin"
    SPONSOR = "sponsor"  # a sponsor platform: reads only
    PLATFORM_OPERATOR = "platform-operator"  # what every tenant's book shares


class Permission(StrEnum):
    READ = "read"  # every read of the tenant's data
    MANAGE_MODELS = "models:write"  # the tenant's models
    MANAGE_ACCOUNTS = "accounts:write"  # accounts, their settings and restrictions, cash
    DECIDE_PROPOSALS = "proposals:decide"  # approve, reject or edit a proposal
    START_RUNS = "runs:start"  # scans, harvests, manual rebalances
    LOAD_BOOKS = "books:load"  # book loads, opening balances
    OPERATE = "operations"  # dead letters, replays, custodian operations
    ADMINISTER = "admin"  # what changes the platform for every user of the tenant
    # what changes every tenant's book: the security master (and its book loads), the
    # equivalence sets, corporate actions
    MANAGE_PLATFORM = "platform:write"


_READS = frozenset({Permission.READ})
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.SPONSOR: _READS,
    Role.ADVISOR: _READS | {Permission.MANAGE_ACCOUNTS},
    Role.MODEL_MANAGER: _READS | {Permission.MANAGE_MODELS},
    Role.OVERLAY_MANAGER: _READS
    | {Permission.MANAGE_ACCOUNTS, Permission.DECIDE_PROPOSALS, Permission.START_RUNS},
    Role.COMPLIANCE: _READS | {Permission.DECIDE_PROPOSALS},
    Role.OPERATIONS: _READS | {Permission.LOAD_BOOKS, Permission.OPERATE, Permission.START_RUNS},
    # a tenant's admin administers its tenant, not what every tenant shares
    Role.ADMIN: frozenset(Permission) - {Permission.MANAGE_PLATFORM},
    Role.PLATFORM_OPERATOR: _READS | {Permission.MANAGE_PLATFORM},
}


class Unauthorized(BallastError):
    """No token, or one that is not valid: the caller is not known (401)."""

    status = 401
    title = "Unauthorized"

    def response_headers(self) -> dict[str, str]:
        # RFC 6750: say which scheme the resource takes.
        return {"WWW-Authenticate": 'Bearer realm="ballast"'}


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
        self._fetch_failed = False

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
        # A failed read is retried sooner than a successful one is refreshed.
        wait_s = FAILED_FETCH_RETRY_S if self._fetch_failed else self.settings.refresh_after_s
        if kid not in self._keys and time.monotonic() - self._fetched_at >= wait_s:
            self._fetched_at = time.monotonic()
            try:
                self._keys = keys_of(await self._fetch())
                self._fetch_failed = False
            except (OSError, ValueError, httpx.HTTPError, jwt.PyJWTError) as exc:
                self._fetch_failed = True
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
    # The subject is recorded as who made a change: text the database can store.
    if len(subject) > MAX_SUBJECT_LENGTH or not subject.isprintable():
        raise Unauthorized(
            f"the token's subject (sub) is not a printable name of at most "
            f"{MAX_SUBJECT_LENGTH} characters"
        )
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
# Requests: every route is public (health, metrics) or requires a permission


PUBLIC_ROUTE = "__ballast_public__"
REQUIRED_PERMISSION = "__ballast_permission__"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def public(endpoint: Endpoint) -> Endpoint:
    """Mark a route's endpoint as answered without a token (health checks, metrics)."""
    setattr(endpoint, PUBLIC_ROUTE, True)
    return endpoint


def is_public(endpoint: Callable[..., Any] | None) -> bool:
    return bool(getattr(endpoint, PUBLIC_ROUTE, False))


async def authenticate(request: Request) -> None:
    """A dependency of every route (before idempotency): the bearer token's principal, kept
    in ``request.state.principal``; 401 without a valid token (public routes excepted)."""
    route = request.scope.get("route")
    tenancy.scope_request(tenancy.NO_TENANT)  # until the token names a tenant
    if route is not None and is_public(getattr(route, "endpoint", None)):
        return
    claimed = [h for h in CLAIMED_IDENTITY_HEADERS if h in request.headers]
    if claimed:
        raise InvalidInput(
            "the tenant and the actor come from the bearer token only",
            [FieldProblem(h, "not accepted: the bearer token names the caller") for h in claimed],
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("this request needs a bearer token: `Authorization: Bearer <JWT>`")
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = await verifier.verify(token.strip())
    request.state.principal = principal
    tenancy.scope_request(tenancy.ALL_TENANTS if _platform_wide(route) else principal.tenant)


def _platform_wide(route: Any) -> bool:
    """A route acting on platform-wide data, for every tenant (MANAGE_PLATFORM)."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return False
    return permission_of(dependant.dependencies) is Permission.MANAGE_PLATFORM


def principal_of_request(request: Request) -> Principal | None:
    """The request's verified principal (None before `authenticate` ran, or on public routes)."""
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


@cache
def requires(permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
    """A route dependency: the caller, if a role of the caller grants ``permission``; else 403."""

    async def caller(request: Request) -> Principal:
        principal = principal_of_request(request)
        if principal is None:
            raise Unauthorized("this request needs a bearer token: `Authorization: Bearer <JWT>`")
        return principal.require(permission)

    setattr(caller, REQUIRED_PERMISSION, permission)
    caller.__name__ = f"requires_{permission.name.lower()}"
    return caller


def permission_of(dependencies: Iterable[Any]) -> Permission | None:
    """The permission a route requires, found among its (nested) dependants: of several, the
    one the fewest roles are granted."""
    found = list(_permissions(dependencies))
    return min(found, key=_roles_granted, default=None)


def _permissions(dependencies: Iterable[Any]) -> Iterator[Permission]:
    for dependant in dependencies:
        permission = getattr(dependant.call, REQUIRED_PERMISSION, None)
        if isinstance(permission, Permission):
            yield permission
        yield from _permissions(dependant.dependencies)


def _roles_granted(permission: Permission) -> int:
    return sum(permission in granted for granted in PERMISSIONS.values())


@dataclass(frozen=True)
class Operation:
    """One route of an app as authorization sees it."""

    path: str
    methods: frozenset[str]
    public: bool
    permission: Permission | None


def operations_of(app: FastAPI) -> list[Operation]:
    """Every API route of `app` (included routers too), public or with what it requires."""
    out = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        endpoint = context.endpoint or route.endpoint
        dependant = context.dependant or route.dependant
        out.append(
            Operation(
                context.path_format or route.path_format,
                frozenset(context.methods or route.methods or ()),
                is_public(endpoint),
                permission_of(dependant.dependencies),
            )
        )
    return out


# What route handlers take: the caller, once its permission is checked.
CanRead = Annotated[Principal, Depends(requires(Permission.READ))]
CanManageModels = Annotated[Principal, Depends(requires(Permission.MANAGE_MODELS))]
CanManageAccounts = Annotated[Principal, Depends(requires(Permission.MANAGE_ACCOUNTS))]
CanDecideProposals = Annotated[Principal, Depends(requires(Permission.DECIDE_PROPOSALS))]
CanStartRuns = Annotated[Principal, Depends(requires(Permission.START_RUNS))]
CanLoadBooks = Annotated[Principal, Depends(requires(Permission.LOAD_BOOKS))]
CanOperate = Annotated[Principal, Depends(requires(Permission.OPERATE))]
CanAdminister = Annotated[Principal, Depends(requires(Permission.ADMINISTER))]
CanManagePlatform = Annotated[Principal, Depends(requires(Permission.MANAGE_PLATFORM))]


# --------------------------------------------------------------------------------------------
# The local issuer


def local_keys_folder() -> Path:
    """Where the local issuer keeps its keys: `BALLAST_AUTH_KEYS`, else the stack's state
    folder's `auth/` (`BALLAST_STATE_DIR`), else `.state/auth`."""
    explicit = os.environ.get("BALLAST_AUTH_KEYS", "").strip()
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("BALLAST_STATE_DIR", "").strip() or ".state") / "auth"


def local_issuer(folder: Path | None = None) -> LocalIssuer:
    """The local issuer of the demo and the tests, its key made on first use."""
    issuer = LocalIssuer(folder or local_keys_folder(), LOCAL_ISSUER, AUDIENCE)
    issuer.ensure_key()
    return issuer


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
