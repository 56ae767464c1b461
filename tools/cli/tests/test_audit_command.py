"""`ballast audit verify`'s arguments and failures that need no database (the chains
themselves are checked on real PostgreSQL in services/model-hub-svc/tests/test_audit.py)."""

import pytest
from ballast_cli.audit import _redacted, describe
from ballast_cli.main import main
from ballast_common.audit import BrokenLink
from ballast_engine.commands import EXIT_BAD_INPUT, EXIT_UNREACHABLE


def ballast(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    code = exit_.value.code
    assert isinstance(code, int)
    return code, capsys.readouterr().err


def test_an_unreachable_database_exits_3_with_one_line_without_the_password(capsys):
    url = "postgresql://auditor:s3cret@127.0.0.1:1/ballast"
    code, err = ballast(capsys, "audit", "verify", "--database-url", url)
    assert code == EXIT_UNREACHABLE
    assert err.startswith("ballast audit verify: error: cannot connect to the database")
    assert err.count("\n") == 1 and "s3cret" not in err and "Traceback" not in err


def test_an_unknown_service_is_a_usage_error(capsys):
    code, err = ballast(capsys, "audit", "verify", "--service", "reporting-svc")
    assert code == EXIT_BAD_INPUT
    assert "ballast audit verify: error: argument --service" in err


def test_a_broken_link_is_named_by_service_tenant_record_and_subject():
    broken = BrokenLink("acme", 7, "model", "core", ("its hash does not match", "and more"))
    assert describe("model-hub-svc", broken) == (
        "model-hub-svc tenant acme record 7 (model core): its hash does not match; and more"
    )


def test_urls_are_shown_without_their_password():
    assert _redacted("postgresql://u:p@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert _redacted("postgresql://h/d") == "postgresql://h/d"
