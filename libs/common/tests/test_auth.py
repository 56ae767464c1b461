"""Bearer tokens: what is accepted, what is refused and why, key rotation, and the roles'
permission matrix (ballast_common.auth)."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from ballast_common import auth
from ballast_common.auth import (
    PERMISSIONS,
    AuthSettings,
    LocalIssuer,
    Permission,
    Principal,
    Role,
    TokenVerifier,
    Unauthorized,
)
from ballast_common.errors import Forbidden

ISSUER, AUDIENCE = "https://auth.ballast.test", "ballast"


@pytest.fixture
def issuer(tmp_path):
    return LocalIssuer(tmp_path / "auth", ISSUER, AUDIENCE)


def verifier(issuer: LocalIssuer, **settings) -> TokenVerifier:
    issuer.ensure_key()
    return TokenVerifier(AuthSettings(ISSUER, AUDIENCE, str(issuer.jwks_path), **settings))


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_a_token_of_the_issuer_names_its_principal(issuer):
    token = issuer.issue("acme", [Role.OVERLAY_MANAGER, "compliance"], "pat@acme")
    principal = await verifier(issuer).verify(token)
    assert principal.subject == "pat@acme"
    assert principal.tenant == "acme"
    assert principal.roles == {Role.OVERLAY_MANAGER, Role.COMPLIANCE}
    assert principal.token_id


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"aud": "someone-else"}, "(?i)audience"),
        ({"iss": "https://evil.test"}, "(?i)issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"tenant": "Not A Tenant!"}, "tenant"),
        ({"roles": ["root"]}, "unknown roles"),
        ({"roles": []}, "roles"),
        ({"sub": "pat\x00"}, "subject"),
        ({"sub": "x" * 201}, "subject"),
    ],
)
async def test_a_token_with_a_wrong_claim_is_refused_naming_it(issuer, change, reason):
    good = jwt.decode(issuer.issue("acme", ["advisor"], "pat"), options={"verify_signature": False})
    kid = issuer.ensure_key()
    token = jwt.encode({**good, **change}, issuer._private_key(), "ES256", headers={"kid": kid})
    with pytest.raises(Unauthorized, match=reason):
        await verifier(issuer).verify(token)


async def test_a_token_missing_a_required_claim_is_refused(issuer):
    good = jwt.decode(issuer.issue("acme", ["advisor"], "pat"), options={"verify_signature": False})
    del good["tenant"]
    token = jwt.encode(good, issuer._private_key(), "ES256", headers={"kid": issuer.ensure_key()})
    with pytest.raises(Unauthorized, match="tenant"):
        await verifier(issuer).verify(token)


async def test_unsigned_tampered_and_hmac_confused_tokens_are_refused(issuer):
    token = issuer.issue("acme", ["sponsor"], "platform")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = _b64({**claims, "roles": ["admin"]})
    check = verifier(issuer)
    with pytest.raises(Unauthorized, match="not valid"):
        await check.verify(f"{header}.{forged}.{signature}")
    kid = issuer.ensure_key()
    with pytest.raises(Unauthorized, match="algorithm 'none'"):
        await check.verify(f"{_b64({'alg': 'none', 'kid': kid})}.{forged}.")
    # HS256 keyed with the issuer's public JWKS (the classic algorithm confusion)
    signing_input = f"{_b64({'alg': 'HS256', 'kid': kid})}.{forged}"
    mac = hmac.new(issuer.jwks_path.read_bytes(), signing_input.encode(), hashlib.sha256)
    confused = signing_input + "." + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized, match="algorithm 'HS256'"):
        await check.verify(confused)
    with pytest.raises(Unauthorized, match="not a JWT"):
        await check.verify("not-a-token")


async def test_a_token_of_another_key_with_a_known_kid_is_refused(issuer, tmp_path):
    kid = issuer.ensure_key()
    stranger = LocalIssuer(tmp_path / "stranger", ISSUER, AUDIENCE)
    stranger.ensure_key()
    good = jwt.decode(issuer.issue("acme", ["admin"], "x"), options={"verify_signature": False})
    token = jwt.encode(good, stranger._private_key(), "ES256", headers={"kid": kid})
    with pytest.raises(Unauthorized, match="not valid"):
        await verifier(issuer).verify(token)


async def test_keys_rotate_without_a_restart_and_old_tokens_keep_verifying(issuer):
    check = verifier(issuer, refresh_after_s=0)
    before = issuer.issue("acme", ["advisor"], "pat")
    await check.verify(before)
    new_kid = issuer.rotate()
    after = issuer.issue("acme", ["advisor"], "pat")
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    assert (await check.verify(after)).subject == "pat"  # unknown kid: the JWKS read again
    assert (await check.verify(before)).subject == "pat"


async def test_an_unknown_kid_does_not_read_the_keys_more_than_once_a_minute(issuer):
    reads = 0
    issuer.ensure_key()
    jwks = json.loads(issuer.jwks_path.read_text())

    async def fetch():
        nonlocal reads
        reads += 1
        return jwks

    check = TokenVerifier(AuthSettings(ISSUER, AUDIENCE, "unused"), fetch)
    good = jwt.decode(issuer.issue("acme", ["admin"], "x"), options={"verify_signature": False})
    unknown = jwt.encode(good, issuer._private_key(), "ES256", headers={"kid": "nope"})
    for _ in range(3):
        with pytest.raises(Unauthorized, match="'nope' is not one of the issuer's"):
            await check.verify(unknown)
    assert reads == 1


async def test_keys_that_could_not_be_read_are_read_again_soon(issuer, monkeypatch):
    issuer.ensure_key()
    jwks = json.loads(issuer.jwks_path.read_text())
    answers: list = [OSError("the issuer is restarting"), jwks]

    async def fetch():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    check = TokenVerifier(AuthSettings(ISSUER, AUDIENCE, "unused"), fetch)
    token = issuer.issue("acme", ["admin"], "x")
    with pytest.raises(Unauthorized, match="cannot be read: the issuer is restarting"):
        await check.verify(token)
    now[0] += auth.FAILED_FETCH_RETRY_S  # not a minute: seconds
    assert (await check.verify(token)).subject == "x"


def test_the_permission_matrix():
    sponsor = Principal("platform", "acme", frozenset({Role.SPONSOR}))
    assert sponsor.can(Permission.READ)
    assert [p for p in Permission if sponsor.can(p)] == [Permission.READ]
    with pytest.raises(Forbidden, match="proposals:decide is not granted to the roles sponsor"):
        sponsor.require(Permission.DECIDE_PROPOSALS)
    # a tenant's admin has every permission but what changes every tenant's book
    assert PERMISSIONS[Role.ADMIN] == frozenset(Permission) - {Permission.MANAGE_PLATFORM}
    assert PERMISSIONS[Role.PLATFORM_OPERATOR] == {Permission.READ, Permission.MANAGE_PLATFORM}
    assert all(Permission.READ in granted for granted in PERMISSIONS.values())
    assert set(PERMISSIONS) == set(Role)
    manager = Principal("m", "acme", frozenset({Role.MODEL_MANAGER}))
    assert manager.require(Permission.MANAGE_MODELS) is manager
    assert not manager.can(Permission.DECIDE_PROPOSALS)
    both = Principal("o", "acme", frozenset({Role.ADVISOR, Role.COMPLIANCE}))
    assert both.can(Permission.MANAGE_ACCOUNTS) and both.can(Permission.DECIDE_PROPOSALS)
    assert not both.can(Permission.MANAGE_MODELS)
