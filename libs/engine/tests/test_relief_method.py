"""One relief-method vocabulary, owned by the engine: its values, its default, the former
``min_tax`` spelling of stored scenarios, and old files replaying to the same trades."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from ballast_engine import model
from ballast_engine.cli import main
from ballast_engine.errors import ScenarioFormatError
from ballast_engine.model import RebalanceInput, TaxSettings
from ballast_engine.rebalance import rebalance
from ballast_engine.scenario import load, scenario_from_dict, scenario_to_dict, schema
from ballast_engine.tax import cli as tax_cli
from ballast_engine.tax.model import (
    DEFAULT_RELIEF_METHOD,
    RELIEF_METHOD_NAMES,
    LedgerAccount,
    ReliefMethod,
    Side,
)

SCENARIOS = Path(__file__).parent / "scenarios"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Written by rebalance-svc's engine before the spelling changed (tax.method "min_tax"); its
# trades and tax summary were recorded beside it by `ballast engine rebalance` at that time.
STORED = SCENARIOS / "stored_min_tax_v1.json"
RECORDED = SCENARIOS / "stored_min_tax_v1.trades.json"


def _tax_method(scenario: dict[str, Any]) -> Any:
    return scenario["account"]["tax"].get("method")


def test_the_vocabulary_and_its_default() -> None:
    assert RELIEF_METHOD_NAMES == ("fifo", "lifo", "hifo", "mintax")
    assert DEFAULT_RELIEF_METHOD is ReliefMethod.FIFO
    # the rebalancing core, the ledger's accounts and the tax CLI share the one default
    assert TaxSettings("2026-01-02").method is DEFAULT_RELIEF_METHOD
    assert LedgerAccount("A", "H").method is DEFAULT_RELIEF_METHOD
    assert _taxlot_args("form8949", "t.csv").method == DEFAULT_RELIEF_METHOD


def _taxlot_args(*argv: str) -> Any:
    parser = argparse.ArgumentParser()
    tax_cli.register(parser.add_subparsers())
    return parser.parse_args(["taxlot", *argv])


def test_the_tax_cli_offers_the_engine_vocabulary(capsys: pytest.CaptureFixture[str]) -> None:
    for name in RELIEF_METHOD_NAMES:
        assert _taxlot_args("lots", "t.csv", "--method", name).method == name
    with pytest.raises(SystemExit):
        _taxlot_args("lots", "t.csv", "--method", "min_tax")
    assert "invalid choice: 'min_tax'" in capsys.readouterr().err


def test_side_is_defined_once() -> None:
    assert model.Side is Side


def test_a_stored_min_tax_scenario_replays_to_the_recorded_trades(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _tax_method(json.loads(STORED.read_text())) == "min_tax"
    inp = load(STORED)
    assert isinstance(inp, RebalanceInput) and inp.account.tax is not None
    assert inp.account.tax.method is ReliefMethod.MINTAX
    recorded = json.loads(RECORDED.read_text())
    with pytest.raises(SystemExit) as done:
        main(["engine", "rebalance", str(STORED)])
    assert done.value.code in (0, None)
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["trades"] == recorded["trades"]
    assert replayed["tax"] == recorded["tax"]
    # the min-tax lots, not FIFO's: the old spelling is not read as the default
    assert recorded["trades"][0]["lot_ids"] == ["L-VTI-3", "L-VTI-2"]


def test_a_stored_scenario_is_written_back_with_the_current_spelling() -> None:
    inp = load(STORED)
    assert isinstance(inp, RebalanceInput)
    written = json.loads(json.dumps(scenario_to_dict(inp)))
    assert _tax_method(written) == "mintax"
    again = scenario_from_dict(written)
    assert again == inp
    assert rebalance(again).to_dict() == rebalance(inp).to_dict()


def test_a_scenario_without_a_method_gets_the_default() -> None:
    data = json.loads(STORED.read_text())
    del data["account"]["tax"]["method"]
    inp = scenario_from_dict(data)
    assert inp.account.tax is not None and inp.account.tax.method is DEFAULT_RELIEF_METHOD


@pytest.mark.parametrize("bad", ["min-tax", "MINTAX", "specific", 7])
def test_an_unknown_method_names_the_field_and_the_choices(bad: object) -> None:
    data = json.loads(STORED.read_text())
    data["account"]["tax"]["method"] = bad
    with pytest.raises(ScenarioFormatError) as error:
        scenario_from_dict(data)
    assert error.value.field == "account.tax.method"
    assert error.value.account == "ACC-TAX-1"
    if isinstance(bad, str):
        assert "fifo, lifo, hifo, mintax" in str(error.value)


@pytest.mark.parametrize("name", ["scenario", "book"])
def test_the_file_schemas_list_the_vocabulary_and_the_former_spelling(name: str) -> None:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict) and "method" in props and "as_of" in props:
                found.append(props["method"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema(name))
    assert found, f"no tax settings in the {name} schema"
    for method in found:
        assert method["enum"] == [*RELIEF_METHOD_NAMES, "min_tax"]
        assert method["default"] == DEFAULT_RELIEF_METHOD


def test_examples_use_the_current_spelling() -> None:
    for path in sorted(EXAMPLES.glob("*.json")):
        assert '"min_tax"' not in path.read_text(), path.name
