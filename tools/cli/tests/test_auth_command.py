"""`ballast auth`: tokens the services' verifier accepts, rotation, and bad arguments."""

import pytest
from ballast_cli.main import main
from ballast_common.auth import AUDIENCE, LOCAL_ISSUER, AuthSettings, Role, TokenVerifier


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out.strip(), err.strip()


async def test_a_token_from_the_command_verifies_with_the_jwks_it_writes(tmp_path, capsys):
    keys = str(tmp_path / "auth")
    code, token, _ = run(
        capsys, "auth", "token", "--tenant", "demo", "--role", "advisor", "--keys", keys
    )
    assert code == 0
    verifier = TokenVerifier(AuthSettings(LOCAL_ISSUER, AUDIENCE, f"{keys}/jwks.json"))
    principal = await verifier.verify(token)
    assert (principal.tenant, principal.subject, principal.roles) == (
        "demo",
        "advisor@demo",
        {Role.ADVISOR},
    )
    code, said, _ = run(capsys, "auth", "rotate", "--keys", keys)
    assert code == 0 and "signing with key" in said
    _, newer, _ = run(
        capsys, "auth", "token", "--tenant", "demo", "--role", "admin", "--keys", keys
    )
    assert (await TokenVerifier(verifier.settings).verify(newer)).roles == {Role.ADMIN}
    assert (await TokenVerifier(verifier.settings).verify(token)).subject == "advisor@demo"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tenant", "Bad Tenant", "--role", "admin"], "--tenant 'Bad Tenant'"),
        (["--tenant", "demo", "--role", "admin", "--ttl", "0"], "--ttl 0"),
        (["--tenant", "demo", "--role", "root"], "invalid choice: 'root'"),
        (["--tenant", "demo"], "--role"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(tmp_path, capsys, argv, message):
    code, out, err = run(capsys, "auth", "token", *argv, "--keys", str(tmp_path))
    assert code == 2 and not out
    assert err.splitlines()[-1].startswith("ballast auth token: error: ")
    assert message in err
