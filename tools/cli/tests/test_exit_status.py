"""One convention for every `ballast` command: 0 done, 1 problems found, 2 wrong argument or
unusable input, 3 a service unreachable; errors as `ballast <area> <command>: error: ...`."""

import subprocess
import sys
from pathlib import Path

import pytest
from ballast_cli.main import main
from ballast_engine.commands import EXIT_BAD_INPUT, EXIT_PROBLEMS, EXIT_UNREACHABLE

EXAMPLES = Path(__file__).resolve().parents[3] / "libs" / "engine" / "examples"
BALLAST = Path(sys.executable).with_name("ballast")


def ballast(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    code = exit_.value.code
    assert isinstance(code, int)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (("engine", "rebalance", "{tmp}/missing.json"), "ballast engine rebalance: error: "),
        (("engine", "harvest", "{tmp}/missing.json"), "ballast engine harvest: error: "),
        (("engine", "drift", "{tmp}/missing.json"), "ballast engine drift: error: "),
        (("taxlot", "form8949", "{tmp}/missing.csv"), "ballast taxlot form8949: error: "),
        (("taxlot", "lots", "{tmp}/missing.csv"), "ballast taxlot lots: error: "),
        (("book", "load", "{tmp}/missing"), "ballast book load: error: "),
    ],
)
def test_unusable_input_exits_2_with_the_command_prefix(tmp_path, capsys, argv, prefix):
    code, err = ballast(capsys, *(a.format(tmp=tmp_path) for a in argv))
    assert code == EXIT_BAD_INPUT
    assert err.startswith(prefix) and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (("engine", "rebalance", "x.json", "--format", "xml"), "ballast engine rebalance: error: "),
        (("taxlot", "lots", "t.csv", "--method", "average"), "ballast taxlot lots: error: "),
        (("book", "load", "d", "--as-of", "someday"), "ballast book load: error: "),
        (("nonsense",), "ballast: error: "),
    ],
)
def test_a_wrong_argument_exits_2_with_the_same_prefix(capsys, argv, prefix):
    code, err = ballast(capsys, *argv)
    assert code == EXIT_BAD_INPUT
    assert err.startswith("usage: ") and prefix in err


def test_problems_found_exit_1_each_one_an_error_line(capsys):
    code, err = ballast(capsys, "engine", "drift", str(EXAMPLES / "book.json"))
    assert code == EXIT_PROBLEMS
    lines = err.splitlines()
    assert lines and all(line.startswith("ballast engine drift: error: ") for line in lines)


def test_a_service_that_cannot_be_reached_exits_3(tmp_path, capsys):
    day = tmp_path / "2026-12-04"
    day.mkdir()
    for name in ("prices", "households", "accounts", "cash", "positions", "lots"):
        (day / f"{name}.csv").write_text("a\n1\n")
    code, err = ballast(
        capsys, "book", "load", str(day), "--port-base", "1", "--token", "t", "--retry-for", "0"
    )
    assert code == EXIT_UNREACHABLE
    # stderr also carries the progress display; the error is its last line
    assert err.splitlines()[-1].startswith("ballast book load: error: cannot reach ")


def test_the_installed_command_follows_the_convention(tmp_path):
    trades = tmp_path / "t.csv"
    trades.write_text("account,household\n")
    result = subprocess.run(
        [str(BALLAST), "taxlot", "lots", str(trades)], capture_output=True, text=True, check=False
    )
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.startswith(f"ballast taxlot lots: error: {trades}: header: missing")
    assert result.stdout == ""
