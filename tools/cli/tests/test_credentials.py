"""The token a command calls with: given, made by the local issuer, or a clear error."""

from pathlib import Path

import pytest
from ballast_cli.credentials import bearer_token
from ballast_cli.main import main
from ballast_common.auth import AUDIENCE, LOCAL_ISSUER, AuthSettings, Role, TokenVerifier
from ballast_engine.commands import CommandError


def test_a_given_token_is_used_as_it_is(monkeypatch):
    monkeypatch.setenv("BALLAST_TOKEN", "from-the-environment")
    assert bearer_token("given", "demo", Role.OPERATIONS) == "given"
    assert bearer_token(None, "demo", Role.OPERATIONS) == "from-the-environment"


def test_without_a_token_or_local_keys_the_error_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.delenv("BALLAST_TOKEN", raising=False)
    monkeypatch.setenv("BALLAST_AUTH_KEYS", str(tmp_path / "none"))
    with pytest.raises(CommandError, match="ballast auth token --tenant acme --role operations"):
        bearer_token(None, "acme", Role.OPERATIONS)


async def test_init_makes_the_keys_and_a_local_token_verifies(monkeypatch, tmp_path, capsys):
    keys = tmp_path / "auth"
    monkeypatch.delenv("BALLAST_TOKEN", raising=False)
    monkeypatch.setenv("BALLAST_AUTH_KEYS", str(keys))
    with pytest.raises(SystemExit) as exit_:
        main(["auth", "init", "--keys", str(keys)])
    assert exit_.value.code in (0, None)
    jwks = Path(capsys.readouterr().out.strip())
    assert jwks == (keys / "jwks.json").resolve()
    assert "keys" in jwks.read_text()  # noqa: ASYNC240 (a test)
    token = bearer_token(None, "acme", Role.OPERATIONS)
    assert "calling as operations of tenant acme" in capsys.readouterr().err
    verifier = TokenVerifier(AuthSettings(LOCAL_ISSUER, AUDIENCE, str(jwks)))
    principal = await verifier.verify(token)
    assert (principal.tenant, principal.roles) == ("acme", {Role.OPERATIONS})
