"""scripts/services.py --order-protocol: http unless asked; fix puts the simulator's acceptor on
N+8 and the gateway's session against it, stores per system, one gateway instance."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services.py"


@pytest.fixture(scope="module")
def launcher() -> ModuleType:
    name = "ballast_services_order_protocol_test"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_http_unless_asked(launcher: ModuleType) -> None:
    assert launcher.order_protocol(None, {}) == "http"
    assert launcher.order_protocol(None, {"BALLAST_ORDER_PROTOCOL": "FIX"}) == "fix"
    assert launcher.order_protocol("http", {"BALLAST_ORDER_PROTOCOL": "fix"}) == "http"
    with pytest.raises(launcher.LaunchError, match="http or fix, got 'smtp'"):
        launcher.order_protocol(None, {"BALLAST_ORDER_PROTOCOL": "smtp"})


def test_fix_settings_pair_the_gateway_with_the_simulator(launcher: ModuleType) -> None:
    system = {"BALLAST_DATABASE_URL": "postgresql://x/db1", "BALLAST_TOPIC_PREFIX": "t."}
    env = launcher.fix_env("demo", 8000, system)
    assert env["SIM_FIX_PORT"] == env["CUSTODIAN_GATEWAY_FIX_PORT"] == "8008"
    assert env["CUSTODIAN_GATEWAY_ORDER_PROTOCOL"] == "fix"
    store = Path(env["CUSTODIAN_GATEWAY_FIX_STORE_DIR"])
    # the gateway's session stores go with the simulator's book: one pair per system
    book = launcher.simulator_store("demo", system)
    assert store.parent == book.parent
    assert store.name.rsplit("-", 1)[1] == book.stem.rsplit("-", 1)[1]
    other = launcher.fix_env("demo", 8000, {**system, "BALLAST_TOPIC_PREFIX": "u."})
    assert other["CUSTODIAN_GATEWAY_FIX_STORE_DIR"] != str(store)
    # the FIX port is no instance's port
    ports = {i.port(8000) for i in launcher.plan({"all": 9})}
    assert 8008 not in ports


def test_the_option_is_for_up_only(
    launcher: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launcher.parse_args(["up", "--order-protocol", "fix"]).order_protocol == "fix"
    assert launcher.parse_args(["up"]).order_protocol is None
    assert launcher.main(["status", "--profile", "nothing-here", "--order-protocol", "fix"]) == 1
    assert "--order-protocol applies to `up` only" in capsys.readouterr().err


def test_over_fix_the_gateway_is_one_instance(
    launcher: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(launcher, "VENV_BIN", Path(sys.executable).parent)
    monkeypatch.setattr(launcher, "STATE", tmp_path)
    with pytest.raises(launcher.LaunchError, match="one instance"):
        launcher.up("p", 8000, replicas={"custodian-gateway": 2}, protocol="fix")
