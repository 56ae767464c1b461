"""Bad input, scenario files (round trip, schema), the command line and the book drift scan."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from ballast_engine.builders import (
    reference,
    scenario,
    securities,
    sma,
    synthetic_sma_book,
    synthetic_uma_book,
)
from ballast_engine.cli import main
from ballast_engine.drift import book_arrays, scan_book, scan_drift
from ballast_engine.errors import (
    BandError,
    EngineInputError,
    NegativeQuantityError,
    ScenarioFormatError,
    UnknownSecurityError,
    UnpricedSecurityError,
    WeightSumError,
)
from ballast_engine.model import (
    Account,
    Band,
    BandKind,
    Book,
    DriftLevel,
    Holding,
    Model,
    ModelEntry,
    Security,
    Strategy,
    StrategyEntry,
)
from ballast_engine.rebalance import measure_drift, rebalance, rebalance_book
from ballast_engine.scenario import (
    book_from_dict,
    book_to_dict,
    load,
    scenario_from_dict,
    scenario_to_dict,
    schema,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SECS = securities({"A": 100.0, "B": 50.0})
MODEL = Model("M", (ModelEntry("A", 0.5), ModelEntry("B", 0.5)))


def _run(acct: Account, ref=None):  # type: ignore[no-untyped-def]
    return rebalance(scenario(acct, ref or reference(SECS, [MODEL])))


# --- typed errors -------------------------------------------------------------------------


def test_unknown_security_names_account_sleeve_security_field() -> None:
    with pytest.raises(UnknownSecurityError) as ei:
        _run(sma("ACC-9", "M", {"A": 1, "ZZZ": 3}))
    e = ei.value
    assert (e.account, e.sleeve, e.security, e.field) == ("ACC-9", "main", "ZZZ", "holdings")
    assert str(e).startswith("account ACC-9, sleeve main, security ZZZ, field holdings:")


def test_unpriced_security() -> None:
    secs = {**SECS, "B": Security("B", None)}
    with pytest.raises(UnpricedSecurityError) as ei:
        _run(sma("ACC", "M", {"A": 1}), reference(secs, [MODEL]))
    assert ei.value.security == "B" and ei.value.field == "price"


def test_weights_must_sum_to_100_percent() -> None:
    bad = Model("M", (ModelEntry("A", 0.5), ModelEntry("B", 0.4)))
    with pytest.raises(WeightSumError, match=r"90\.000000%"):
        _run(sma("ACC", "M", {}), reference(SECS, [bad]))
    ok = Model("M", (ModelEntry("A", 0.5), ModelEntry("B", 0.49995)))  # within 0.01 point
    _run(sma("ACC", "M", {}), reference(SECS, [ok]))


def test_negative_quantity() -> None:
    with pytest.raises(NegativeQuantityError) as ei:
        _run(sma("ACC", "M", {"A": -1}))
    assert ei.value.security == "A" and ei.value.field == "quantity"


def test_band_wider_than_target_allows() -> None:
    strat = Strategy("S", (StrategyEntry("M", 1.0, Band(BandKind.ABSOLUTE, 0.0)),))
    wide = Strategy(
        "W", (StrategyEntry("M", 0.5, Band(BandKind.RELATIVE, 1.5)), StrategyEntry("M2", 0.5))
    )
    ref = reference(SECS, [MODEL, replace(MODEL, model_id="M2")], [strat, wide])
    acct = Account("U", sma("U", "M", {}).sleeves, strategy_id="W")
    with pytest.raises(BandError, match="wider than the target allows"):
        rebalance(scenario(acct, ref))


def test_book_reports_a_bad_account_and_rebalances_the_rest() -> None:
    ref = reference(SECS, [MODEL])
    book = Book(
        ref,
        (sma("GOOD-1", "M", {"A": 10}), sma("BAD", "M", {"Q": 1}), sma("GOOD-2", "M", {"B": 20})),
    )
    res = rebalance_book(book)
    assert [r.account_id for r in res.results] == ["GOOD-1", "GOOD-2"]
    (f,) = res.failures
    assert f.account_id == "BAD" and f.code == "unknown_security" and f.detail["security"] == "Q"
    assert all(r.trades for r in res.results)


# --- scenario files -----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_examples_validate_against_the_schema_and_round_trip(path: Path) -> None:
    data = json.loads(path.read_text())
    is_book = "accounts" in data
    jsonschema.validate(data, schema("book" if is_book else "scenario"))
    if is_book:
        book = book_from_dict(data)
        again = book_to_dict(book)
        jsonschema.validate(again, schema("book"))
        assert book_from_dict(again) == book
    else:
        inp = scenario_from_dict(data)
        again = scenario_to_dict(inp)
        jsonschema.validate(again, schema("scenario"))
        assert scenario_from_dict(again) == inp
        assert scenario_from_dict(json.loads(json.dumps(again))) == inp


def test_replay_gives_the_same_trades() -> None:
    inp = load(EXAMPLES / "restrictions_equivalents.json")
    first = rebalance(inp)  # type: ignore[arg-type]
    replayed = rebalance(scenario_from_dict(json.loads(json.dumps(scenario_to_dict(inp)))))  # type: ignore[arg-type]
    assert first.to_dict() == replayed.to_dict()


def test_format_errors_name_the_field() -> None:
    data = json.loads((EXAMPLES / "sma_basic.json").read_text())
    data["account"]["sleeves"][0]["holdings"][1]["quantity"] = "ten"
    with pytest.raises(ScenarioFormatError) as ei:
        scenario_from_dict(data)
    assert ei.value.field == "account.sleeves[0].holdings[1].quantity"
    assert ei.value.account == "ACC-1001" and ei.value.sleeve == "main"
    data = json.loads((EXAMPLES / "sma_basic.json").read_text())
    data["account"]["sleeves"][0]["settings"]["min_trade_valu"] = 5
    with pytest.raises(ScenarioFormatError, match="not a known field"):
        scenario_from_dict(data)


# --- command line -------------------------------------------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as ei:
        main(list(argv))
    out = capsys.readouterr()
    return int(ei.value.code or 0), out.out, out.err


def test_cli_rebalance_json_and_table(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _cli(capsys, "engine", "rebalance", str(EXAMPLES / "sma_basic.json"))
    assert code == 0 and err == ""
    res = json.loads(out)
    assert [(t["side"], t["symbol"], t["quantity"]) for t in res["trades"]] == [
        ("sell", "VTI", "11"),
        ("buy", "BND", "70"),
        ("sell", "XOM", "12"),
    ]
    code, out, _ = _cli(
        capsys, "engine", "rebalance", str(EXAMPLES / "uma_strategic.json"), "--format", "table"
    )
    assert code == 0 and "Cash movements:" in out and "Why:" in out


def test_cli_errors_are_one_line_without_traceback(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _cli(capsys, "engine", "rebalance", str(EXAMPLES / "invalid_weights.json"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("ballast engine rebalance: error: account ACC-1001")
    assert "field weight" in err
    missing = tmp_path / "nope.json"
    code, _, err = _cli(capsys, "engine", "rebalance", str(missing))
    assert code == 2 and err.startswith("ballast engine rebalance: error: file not found")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code, _, err = _cli(capsys, "engine", "drift", str(broken))
    assert code == 2 and "not valid JSON" in err and err.count("\n") == 1
    assert err.startswith("ballast engine drift: error: ")


def test_cli_book_partial_failure(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _cli(capsys, "engine", "drift", str(EXAMPLES / "book.json"))
    assert code == 1  # the command ran and found problems
    assert err.startswith("ballast engine drift: error: ")
    assert "account BAD-3" in err and "security ZZZ" in err
    res = json.loads(out)
    assert res["accounts_scanned"] == 2
    assert [a["account_id"] for a in res["accounts"]] == ["DRIFT-2"]
    code, out, err = _cli(capsys, "engine", "rebalance", str(EXAMPLES / "book.json"))
    assert code == 1 and len(json.loads(out)["results"]) == 2


# --- drift --------------------------------------------------------------------------------


def _levels(drift) -> set[str]:  # type: ignore[no-untyped-def]
    return {i.level.value for i in drift.out_of_band}


@pytest.mark.parametrize(
    "book", [synthetic_sma_book(60, 12, seed=3), synthetic_uma_book(25, 3, 6, seed=5)]
)
def test_vectorized_scan_agrees_with_measure_drift(book: Book) -> None:
    scan = scan_book(book)
    assert scan.out_of_tolerance.any()
    for i, acct in enumerate(book.accounts):
        d = measure_drift(acct, book.reference)
        want = _levels(d)
        got = {
            lv.value
            for j, lv in enumerate(
                (DriftLevel.SECURITY, DriftLevel.SLEEVE, DriftLevel.ASSET_CLASS, DriftLevel.CASH)
            )
            if scan.flags[i, j]
        }
        assert got == want, acct.account_id
        assert np.isclose(scan.max_abs_drift[i, 0], d.max_abs_drift(DriftLevel.SECURITY))
        assert np.isclose(scan.max_abs_drift[i, 2], d.max_abs_drift(DriftLevel.ASSET_CLASS))


def test_scan_flags_levels_and_amounts() -> None:
    ref = reference(SECS, [MODEL])
    balanced = sma("OK", "M", {"A": 50, "B": 100})
    drifted = sma("OFF", "M", {"A": 60, "B": 80})  # A 60%, B 40%
    scan = scan_book(Book(ref, (balanced, drifted)))
    assert scan.out_of_tolerance.tolist() == [False, True]
    (rec,) = scan.records()
    assert rec["account_id"] == "OFF" and "security" in rec["levels"]
    assert rec["max_abs_drift"]["security"] == pytest.approx(0.1)
    arrays, failures = book_arrays(Book(ref, (balanced,)))
    assert failures == () and not scan_drift(arrays).out_of_tolerance.any()


def test_drift_report_levels() -> None:
    secs = {"A": Security("A", 100.0, "eq"), "B": Security("B", 50.0, "bond")}
    ref = reference(secs, [MODEL])
    d = measure_drift(sma("X", "M", {"A": 60, "B": 80}), ref)
    by = {(i.level.value, i.key): i for i in d.items}
    assert by[("security", "A")].weight == pytest.approx(0.6)
    assert by[("asset_class", "eq")].out_of_band  # 60% vs 50% ± 5
    assert not by[("cash", "cash")].out_of_band
    _ = Holding, EngineInputError


def test_engine_imports_no_io_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ballast_engine.rebalance, ballast_engine.drift, ballast_engine.scenario, "
        "ballast_engine.engine_cli\n"
        "bad = [m for m in ('fastapi', 'sqlmodel', 'aiokafka', 'asyncpg', 'httpx', 'sqlalchemy') "
        "if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
