"""`ballast`: the engine's areas (`engine`, `taxlot`: replay decisions from files, no I/O),
`book` (load a book from files into the running services), `custodian` (check a custodian's
daily files offline) and `auth` (the local token issuer)."""

from __future__ import annotations

from collections.abc import Sequence

from ballast_engine import cli

from ballast_cli import audit, auth, book, custodian


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(argv, extra=[book.register, custodian.register, auth.register, audit.register])
