"""`ballast auth ...`: the local token issuer for the demo and the tests.

    ballast auth token --tenant demo --role overlay-manager [--role compliance]
                       [--subject pat@demo] [--ttl 3600] [--keys .state/auth]
    ballast auth rotate [--keys .state/auth]
    ballast auth init [--keys .state/auth]      # make the key and JWKS if there are none

The issuer's signing key and its JWKS (every key it signed with, for the services to
check tokens against) live in the keys folder, made on first use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ballast_common.auth import (
    AUDIENCE,
    LOCAL_ISSUER,
    TENANT_PATTERN,
    LocalIssuer,
    Role,
    local_keys_folder,
)
from ballast_engine.commands import EXIT_OK, CommandError, runs

DEFAULT_KEYS = str(local_keys_folder())


def register(areas: argparse._SubParsersAction) -> None:
    auth = areas.add_parser("auth", help="issue tokens for the demo and the tests")
    cmds = auth.add_subparsers(dest="auth_cmd", metavar="COMMAND", required=True)
    token = cmds.add_parser(
        "token",
        help="print a signed bearer token for a tenant and roles",
        description="Print a bearer token (a JWT signed by the local issuer) on stdout.",
    )
    token.add_argument("--tenant", required=True, help="the tenant the token acts for")
    token.add_argument(
        "--role",
        action="append",
        required=True,
        choices=[r.value for r in Role],
        help="a role (repeat for several)",
    )
    token.add_argument("--subject", help="who the token names (default: <first role>@<tenant>)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid")
    token.add_argument("--keys", default=DEFAULT_KEYS, help="the issuer's keys folder")
    token.add_argument("--audience", default=AUDIENCE)
    runs(token, _run_token)
    rotate = cmds.add_parser(
        "rotate",
        help="sign with a new key from now on (tokens signed before keep verifying)",
    )
    rotate.add_argument("--keys", default=DEFAULT_KEYS, help="the issuer's keys folder")
    runs(rotate, _run_rotate)
    init = cmds.add_parser(
        "init",
        help="make the issuer's key and JWKS if there are none; print the JWKS's path",
    )
    init.add_argument("--keys", default=DEFAULT_KEYS, help="the issuer's keys folder")
    runs(init, _run_init)


def _run_token(args: argparse.Namespace) -> int:
    if not TENANT_PATTERN.match(args.tenant):
        raise CommandError(
            f"--tenant {args.tenant!r}: a tenant id is 1-63 of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    if not 0 < args.ttl <= 7 * 24 * 3600:
        raise CommandError(f"--ttl {args.ttl}: between 1 second and 7 days")
    issuer = LocalIssuer(Path(args.keys), LOCAL_ISSUER, args.audience)
    subject = args.subject or f"{args.role[0]}@{args.tenant}"
    print(issuer.issue(args.tenant, args.role, subject, ttl_s=args.ttl))
    return EXIT_OK


def _run_rotate(args: argparse.Namespace) -> int:
    kid = LocalIssuer(Path(args.keys), LOCAL_ISSUER, AUDIENCE).rotate()
    print(f"signing with key {kid} from now on; {Path(args.keys) / 'jwks.json'} lists every key")
    return EXIT_OK


def _run_init(args: argparse.Namespace) -> int:
    issuer = LocalIssuer(Path(args.keys), LOCAL_ISSUER, AUDIENCE)
    issuer.ensure_key()
    print(issuer.jwks_path.resolve())
    return EXIT_OK
