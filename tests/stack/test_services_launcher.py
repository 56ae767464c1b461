"""scripts/services.py: the replica port scheme, --replicas, its state file, and one cheap live
run of the launcher on stand-in apps (real uvicorn processes; no Kafka, no Postgres)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services.py"


@pytest.fixture(scope="module")
def launcher() -> ModuleType:
    name = "ballast_services_launcher_test"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_script_imports_only_the_standard_library() -> None:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(SCRIPT.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    assert modules and modules <= set(sys.stdlib_module_names), modules


# -- ports and names ----------------------------------------------------------------------------


def test_first_instances_keep_the_documented_ports(launcher: ModuleType) -> None:
    assert launcher.urls(8000) == {
        "account-svc": "http://127.0.0.1:8001",
        "model-hub-svc": "http://127.0.0.1:8002",
        "rebalance-svc": "http://127.0.0.1:8003",
        "taxlot-svc": "http://127.0.0.1:8004",
        "custodian-gateway": "http://127.0.0.1:8005",
        "reporting-svc": "http://127.0.0.1:8006",
        "custodian-sim": "http://127.0.0.1:8009",
    }


def test_replica_r_listens_at_base_plus_offset_plus_ten_r(launcher: ModuleType) -> None:
    rebalance = launcher.service_by_name("rebalance-svc")
    ports = [launcher.Instance(rebalance, r).port(18800) for r in range(3)]
    assert ports == [18803, 18813, 18823]
    names = [launcher.Instance(rebalance, r).name for r in range(3)]
    assert names == ["rebalance-svc", "rebalance-svc.1", "rebalance-svc.2"]


def test_the_most_replicas_never_share_a_port_nor_leave_the_profile_window(
    launcher: ModuleType,
) -> None:
    most = launcher.plan({"all": launcher.MAX_INSTANCES})
    ports = [i.port(18800) for i in most]
    assert len(ports) == len(set(ports)), "two instances on one port"
    assert min(ports) >= 18801 and max(ports) <= 18899
    assert len(most) == 6 * launcher.MAX_INSTANCES + 1
    assert most[0].name == "custodian-sim", "the simulator starts first"


# -- --replicas ---------------------------------------------------------------------------------


def test_default_is_one_of_each(launcher: ModuleType) -> None:
    assert set(launcher.resolve_replicas(None).values()) == {1}
    assert [i.name for i in launcher.plan()] == [
        "custodian-sim",
        "account-svc",
        "model-hub-svc",
        "rebalance-svc",
        "taxlot-svc",
        "custodian-gateway",
        "reporting-svc",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rebalance-svc=2,taxlot-svc=2", {"rebalance-svc": 2, "taxlot-svc": 2}),
        ("all=2", {"all": 2}),
        (" all = 3 , rebalance-svc=4 ,", {"all": 3, "rebalance-svc": 4}),
        ("", {}),
    ],
)
def test_parse_replicas(launcher: ModuleType, text: str, expected: dict[str, int]) -> None:
    assert launcher.parse_replicas(text) == expected


def test_all_means_every_consumer_never_the_simulator_and_names_win(
    launcher: ModuleType,
) -> None:
    for requested in ({"all": 2, "rebalance-svc": 3}, {"rebalance-svc": 3, "all": 2}):
        counts = launcher.resolve_replicas(requested)
        assert counts.pop("custodian-sim") == 1
        assert counts.pop("rebalance-svc") == 3
        assert set(counts.values()) == {2}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rebalance-svc", "is not SERVICE=COUNT"),
        ("=2", "is not SERVICE=COUNT"),
        ("rebalance-svc=two", "rebalance-svc='two': the count is not a whole number"),
        ("rebalance-svc=2,rebalance-svc=3", "names rebalance-svc twice"),
        ("rebalance=2", "unknown service 'rebalance' (known: account-svc"),
        ("custodian-sim=2", "custodian-sim runs as one instance only"),
        ("taxlot-svc=0", "replicas for taxlot-svc must be a whole number from 1 to 9, got 0"),
        ("all=10", "replicas for all must be a whole number from 1 to 9, got 10"),
    ],
)
def test_bad_replicas_are_refused_naming_the_problem(
    launcher: ModuleType, text: str, needle: str
) -> None:
    with pytest.raises(launcher.LaunchError) as info:
        launcher.parse_replicas(text)
    assert needle in str(info.value)


def test_api_refuses_a_flag_as_a_count(launcher: ModuleType) -> None:
    with pytest.raises(launcher.LaunchError, match="got True"):
        launcher.resolve_replicas({"rebalance-svc": True})


def test_command_line(launcher: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    args = launcher.parse_args(
        ["up", "--port-base", "18800", "--replicas", "all=2", "--replicas", "taxlot-svc=3"]
    )
    assert (args.command, args.port_base, args.replicas) == ("up", 18800, ["all=2", "taxlot-svc=3"])
    assert launcher.main(["status", "--profile", "nothing-here", "--replicas", "all=2"]) == 1
    assert "--replicas applies to `up` only" in capsys.readouterr().err
    assert launcher.main(["up", "--profile", "nothing-here", "--replicas", "bogus=2"]) == 1
    assert "unknown service 'bogus'" in capsys.readouterr().err


# -- the state file ------------------------------------------------------------------------------


@pytest.fixture
def state_dir(launcher: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(launcher, "STATE", tmp_path / "state")
    return tmp_path / "state"


def test_state_of_an_older_launcher_is_still_read(launcher: ModuleType, state_dir: Path) -> None:
    folder = state_dir / "services" / "old"
    folder.mkdir(parents=True)
    dead = os.getpid() + 10_000_000  # beyond pid_max: never alive
    old = {"account-svc": {"pid": os.getpid(), "url": "http://127.0.0.1:8001"}}
    old["rebalance-svc.1"] = {
        "service": "rebalance-svc",
        "replica": 1,
        "pid": dead,
        "url": "http://127.0.0.1:8013",
    }
    (folder / "state.json").write_text(json.dumps(old))
    assert launcher.pids("old") == {"account-svc": {0: os.getpid()}, "rebalance-svc": {1: dead}}
    alive = {r.name: r.alive for r in launcher.instances("old")}
    assert alive == {"account-svc": True, "rebalance-svc.1": False}
    with pytest.raises(launcher.LaunchError, match="no instance 2 of rebalance-svc"):
        launcher.kill("old", "rebalance-svc", 2)


# -- live, on stand-in apps ----------------------------------------------------------------------

STAND_IN = """
import json, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps(
        {"pid": os.getpid(), "migrate_on_start": os.environ.get("BALLAST_MIGRATE_ON_START")}
    ).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""


def _free_port_base(launcher: ModuleType) -> int:
    for base in range(31000 + (os.getpid() % 50) * 100, 40000, 100):
        if all(launcher._port_free(base + offset) for offset in (1, 9, 11, 21)):
            return base
    pytest.skip("no free ports for the live launcher test")


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
        return dict(json.loads(response.read()))


@pytest.fixture
def stand_ins(
    launcher: ModuleType, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Two stand-in services (one scalable) and a migration step that leaves a mark."""
    (tmp_path / "stand_in_app.py").write_text(STAND_IN)
    marks = tmp_path / "migrations.log"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(
        launcher,
        "SERVICES",
        (
            launcher.Service("stand-in", "stand_in_app:app", 1),
            launcher.Service("stand-in-sim", "stand_in_app:app", 9, scalable=False),
        ),
    )
    code = f"open({str(marks)!r}, 'a').write('migrated\\n'); print('all schemas at head')"
    monkeypatch.setattr(launcher, "MIGRATE_ARGS", ["-c", code])
    yield marks
    launcher.down("live")


def test_up_migrates_once_then_starts_replicas_that_can_be_killed_and_restarted(
    launcher: ModuleType, stand_ins: Path, state_dir: Path
) -> None:
    base = _free_port_base(launcher)
    urls = launcher.up("live", base, timeout_s=60, quiet=True, replicas={"all": 3})
    assert urls == {
        "stand-in": f"http://127.0.0.1:{base + 1}",
        "stand-in-sim": f"http://127.0.0.1:{base + 9}",
    }
    assert stand_ins.read_text() == "migrated\n", "one migration step before the services"

    pids = launcher.pids("live")
    assert sorted(pids["stand-in"]) == [0, 1, 2] and list(pids["stand-in-sim"]) == [0]
    for replica, pid in pids["stand-in"].items():
        answer = _get(f"http://127.0.0.1:{base + 1 + 10 * replica}")
        assert answer == {"pid": pid, "migrate_on_start": "false"}
    folder = state_dir / "services" / "live"
    logs = {p.name for p in folder.glob("*.log")}
    assert logs == {
        "stand-in.log",
        "stand-in.1.log",
        "stand-in.2.log",
        "stand-in-sim.log",
        "migrate.log",
    }
    assert "all schemas at head" in (folder / "migrate.log").read_text()

    # SIGKILL one replica: status sees it, up brings back only that one.
    killed = launcher.kill("live", "stand-in", 1)
    assert killed == pids["stand-in"][1]
    deadline = time.monotonic() + 10
    while launcher._pid_alive(killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not launcher._pid_alive(killed)
    assert launcher.status("live") == 1
    assert {r.name for r in launcher.instances("live") if not r.alive} == {"stand-in.1"}

    launcher.up("live", base, timeout_s=60, quiet=True, replicas={"all": 3})
    after = launcher.pids("live")
    assert after["stand-in"][1] != killed
    assert {r: p for r, p in after["stand-in"].items() if r != 1} == {
        r: p for r, p in pids["stand-in"].items() if r != 1
    }
    assert _get(f"http://127.0.0.1:{base + 11}")["pid"] == after["stand-in"][1]
    assert launcher.status("live") == 0

    everyone = [p for by_replica in after.values() for p in by_replica.values()]
    launcher.down("live")
    assert not any(launcher._pid_alive(p) for p in everyone)
    assert not (folder / "state.json").exists()
    assert stand_ins.read_text() == "migrated\n" * 2


def test_a_failed_migration_starts_nothing(
    launcher: ModuleType, stand_ins: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = (
        "import sys; print('migrations: failed at stand-in (schema x)', file=sys.stderr); "
        "sys.exit(1)"
    )
    monkeypatch.setattr(launcher, "MIGRATE_ARGS", ["-c", code])
    with pytest.raises(launcher.LaunchError) as info:
        launcher.up("live", _free_port_base(launcher), timeout_s=60, quiet=True)
    message = str(info.value)
    assert "migrations failed (exit 1); no service started" in message
    assert "failed at stand-in (schema x)" in message
    assert launcher.pids("live") == {}
