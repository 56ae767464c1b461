"""Configuration, rendering and small helpers of scripts/stack.py."""

from __future__ import annotations

import ast
import shlex
import sys
from pathlib import Path

import pytest

STACK_PATH = Path(__file__).resolve().parents[2] / "scripts" / "stack.py"


def _props(text: str) -> dict[str, str]:
    pairs = [ln.split("=", 1) for ln in text.splitlines() if ln and not ln.startswith("#")]
    return {k: v for k, v in pairs}


def test_script_imports_only_the_standard_library() -> None:
    tree = ast.parse(STACK_PATH.read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    assert modules, "parsed no imports at all"
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)


def test_defaults(stack, tmp_path: Path) -> None:
    cfg = stack.load_config({})
    assert (cfg.kafka_port, cfg.controller_port, cfg.pg_port) == (19092, 19093, 15432)
    assert cfg.state == STACK_PATH.parent.parent / ".state"
    assert cfg.pg_fsync is True
    assert cfg.kafka_pid_file == cfg.state / "kafka" / "kafka.pid"
    assert cfg.kafka_log == cfg.state / "logs" / "kafka.log"
    assert cfg.pg_log == cfg.state / "logs" / "postgres.log"
    assert cfg.pg_data.parent == cfg.state / "postgres"


def test_env_overrides(stack, tmp_path: Path) -> None:
    cfg = stack.load_config(
        {
            "BALLAST_STATE_DIR": str(tmp_path),
            "BALLAST_KAFKA_PORT": "29092",
            "BALLAST_KAFKA_CONTROLLER_PORT": " 29093 ",
            "BALLAST_PG_PORT": "25432",
            "BALLAST_PG_FSYNC": "off",
        }
    )
    assert cfg.state == tmp_path.resolve()
    assert (cfg.kafka_port, cfg.controller_port, cfg.pg_port) == (29092, 29093, 25432)
    assert cfg.pg_fsync is False


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"BALLAST_KAFKA_PORT": "kafka"}, "BALLAST_KAFKA_PORT='kafka' is not a port number"),
        ({"BALLAST_PG_PORT": "70000"}, "BALLAST_PG_PORT=70000 is outside 1..65535"),
        ({"BALLAST_PG_PORT": "19092"}, "the four ports must differ"),
        ({"BALLAST_KAFKA_SASL_PORT": "19093"}, "the four ports must differ"),
        ({"BALLAST_PG_FSYNC": "maybe"}, "BALLAST_PG_FSYNC='maybe' must be on or off"),
        ({"BALLAST_PG_SHARED_BUFFERS": "lots"}, "must be a size such as 512MB or 2GB"),
        ({"BALLAST_STACK_TIMEOUT": "-1"}, "must be positive"),
    ],
)
def test_bad_env_is_a_clear_error(stack, env: dict[str, str], needle: str) -> None:
    with pytest.raises(stack.StackError) as info:
        stack.load_config(env)
    assert needle in info.value.message


def test_server_properties_follow_the_ports(stack, tmp_path: Path) -> None:
    cfg = stack.load_config(
        {
            "BALLAST_STATE_DIR": str(tmp_path),
            "BALLAST_KAFKA_PORT": "29092",
            "BALLAST_KAFKA_CONTROLLER_PORT": "29093",
        }
    )
    assert cfg.sasl_port == 19094
    props = _props(stack.render_server_properties(cfg, "adminpw"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:29092,SASL_PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:29093"
    )
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:29092,SASL_PLAINTEXT://127.0.0.1:19094"
    )
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    )
    # principals: ACLs enforced, nothing allowed without one, the stack's admin is super
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    assert props["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert 'password="adminpw"' in props["listener.name.controller.plain.sasl.jaas.config"]
    assert props["log.dirs"] == str(tmp_path.resolve() / "kafka" / "data")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["num.partitions"] == "6"
    assert props["auto.create.topics.enable"] == "true"
    assert "0.0.0.0" not in stack.render_server_properties(cfg, "adminpw")


def test_postgres_args_fsync_switch(stack, tmp_path: Path) -> None:
    bindir = Path("/opt/pg/bin")
    on = stack.postgres_args(stack.load_config({"BALLAST_STATE_DIR": str(tmp_path)}), bindir)
    off = stack.postgres_args(
        stack.load_config({"BALLAST_STATE_DIR": str(tmp_path), "BALLAST_PG_FSYNC": "off"}),
        bindir,
    )
    assert on[:3] == ["/opt/pg/bin/postgres", "-D", str(tmp_path.resolve() / "postgres" / "data")]
    for args in (on, off):
        assert "listen_addresses=127.0.0.1" in args
        assert "port=15432" in args
        assert "max_connections=200" in args
    assert not any(a.startswith("fsync=") for a in on)
    assert {"fsync=off", "synchronous_commit=off", "full_page_writes=off"} <= set(off)


def test_postgres_is_sized_for_a_book(stack, tmp_path: Path) -> None:
    bindir = Path("/opt/pg/bin")
    default = stack.postgres_args(stack.load_config({"BALLAST_STATE_DIR": str(tmp_path)}), bindir)
    assert {"shared_buffers=2GB", "max_wal_size=8GB", "checkpoint_timeout=15min"} <= set(default)
    smaller = stack.load_config(
        {"BALLAST_STATE_DIR": str(tmp_path), "BALLAST_PG_SHARED_BUFFERS": "256MB"}
    )
    assert "shared_buffers=256MB" in stack.postgres_args(smaller, bindir)


def test_env_exports_round_trip_through_a_shell(stack, tmp_path: Path) -> None:
    state = tmp_path / "with space's"
    cfg = stack.load_config({"BALLAST_STATE_DIR": str(state), "BALLAST_PG_PORT": "25432"})
    exported = {}
    for line in stack.env_exports(cfg):
        words = shlex.split(line)
        assert words[0] == "export"
        name, value = words[1].split("=", 1)
        exported[name] = value
    assert exported["BALLAST_STATE_DIR"] == str(state.resolve())
    # clients connect as the stack's admin on the SASL listener; the observer's is anonymous
    assert exported["BALLAST_KAFKA_BOOTSTRAP"] == "127.0.0.1:19094"
    assert exported["BALLAST_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19094"
    assert exported["BALLAST_KAFKA_OBSERVER_BOOTSTRAP"] == "127.0.0.1:19092"
    assert exported["BALLAST_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert exported["BALLAST_KAFKA_USERNAME"] == "admin"
    credentials = stack.kafka_credentials(cfg)
    assert exported["BALLAST_KAFKA_PASSWORD"] == credentials["admin"]
    assert set(credentials) == {"admin", *stack.SERVICE_PRINCIPALS}
    assert len(set(credentials.values())) == len(credentials)  # one random password each
    assert (cfg.credentials_file.stat().st_mode & 0o777) == 0o600
    assert stack.kafka_credentials(cfg) == credentials  # kept, not regenerated
    assert (
        exported["BALLAST_DATABASE_URL"] == "postgresql://ballast:ballast@127.0.0.1:25432/ballast"
    )
    assert exported["PGPORT"] == "25432"
    assert (exported["PGUSER"], exported["PGPASSWORD"], exported["PGDATABASE"]) == ("ballast",) * 3


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ("command not found", None),
    ],
)
def test_java_major(stack, output: str, major: int | None) -> None:
    assert stack.java_major(output) == major


@pytest.mark.parametrize("name", ["ballast", "ballast_test_1", "_x", "a-b", "X" * 63])
def test_valid_db_names(stack, name: str) -> None:
    assert stack.check_db_name(name) == name


@pytest.mark.parametrize("name", ["", "1abc", "bad name", 'x"; DROP', "x" * 64, "a'b"])
def test_invalid_db_names(stack, name: str) -> None:
    with pytest.raises(stack.StackError, match="invalid database name"):
        stack.check_db_name(name)


def test_tail_reads_last_lines(stack, tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert stack.tail(log, 3) == ["line 97", "line 98", "line 99"]
    assert stack.tail(tmp_path / "missing.log") == []
