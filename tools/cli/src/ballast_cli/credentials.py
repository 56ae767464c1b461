"""The bearer token a command calls the services with.

Given (`--token`, or `BALLAST_TOKEN`), it is used as it is. Otherwise, where the local
issuer's keys exist (the demo's and the tests' stack: `.state/auth`), a short-lived token is
made for the tenant and role the command needs, and the command says so on stderr.
"""

from __future__ import annotations

import os
import sys

from ballast_common.auth import Role, local_issuer, local_keys_folder
from ballast_engine.commands import CommandError

TOKEN_ENV = "BALLAST_TOKEN"
LOCAL_TOKEN_TTL_S = 3600


def bearer_token(
    given: str | None,
    tenant: str,
    role: Role,
    quiet: bool = False,
    also: tuple[Role, ...] = (),
) -> str:
    """The token to call with: the one given, else one of the local issuer (with `role` and
    the roles `also`); else an error that says how to get one."""
    token = (given or os.environ.get(TOKEN_ENV, "")).strip()
    if token:
        return token
    keys = local_keys_folder()
    if not (keys / "signing-key.pem").exists():
        raise CommandError(
            f"no bearer token: pass --token or set {TOKEN_ENV} (for the local stack: "
            f"`ballast auth token --tenant {tenant} "
            + " ".join(f"--role {r.value}" for r in (role, *also))
            + "`)"
        )
    if not quiet:
        print(
            f"calling as {' and '.join(r.value for r in (role, *also))} of tenant {tenant} "
            f"with a token of the local issuer ({keys})",
            file=sys.stderr,
        )
    subject = f"{role.value}@{tenant}"
    return local_issuer(keys).issue(tenant, [role, *also], subject, ttl_s=LOCAL_TOKEN_TTL_S)


def authorization(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
