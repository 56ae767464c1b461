"""Pid files, stopping, ports, lock files and the one-line errors of scripts/stack.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MARKER = "ballast-stack-test-marker"


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child that sleeps, with MARKER in its argv, that ignores SIGTERM once told to."""
    code = (
        "import signal, sys, time\n"
        "if sys.argv[1] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    procs: list[subprocess.Popen[bytes]] = []

    def start(mode: str = "polite", cwd: Path | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, mode, MARKER], stdout=subprocess.PIPE, cwd=cwd
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        procs.append(proc)
        return proc

    yield start  # type: ignore[misc]
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_read_pid(stack, tmp_path: Path) -> None:
    f = tmp_path / "x.pid"
    assert stack.read_pid(f) is None
    for text, want in [("123\n", 123), ("  42  ", 42), ("", None), ("abc", None), ("-5", None)]:
        f.write_text(text)
        assert stack.read_pid(f) == want, text


def test_dead_pid_file_is_removed(stack, tmp_path: Path) -> None:
    f = tmp_path / "kafka.pid"
    f.write_text(f"{_dead_pid()}\n")
    assert stack.live_pid_from_file(f, [MARKER]) is None
    assert not f.exists()


def test_garbage_pid_file_is_removed(stack, tmp_path: Path) -> None:
    f = tmp_path / "kafka.pid"
    f.write_text("not a pid")
    assert stack.live_pid_from_file(f, [MARKER]) is None
    assert not f.exists()


def test_reused_pid_of_another_program_is_stale(stack, tmp_path: Path) -> None:
    f = tmp_path / "kafka.pid"
    f.write_text(f"{os.getpid()}\n")  # alive, but not a process with our markers
    assert stack.live_pid_from_file(f, [MARKER]) is None
    assert not f.exists()


def test_live_matching_pid_is_kept(stack, sleeper, tmp_path: Path) -> None:
    proc = sleeper()
    f = tmp_path / "kafka.pid"
    stack.write_pid(f, proc.pid)
    assert stack.live_pid_from_file(f, [MARKER]) == proc.pid
    assert f.read_text() == f"{proc.pid}\n"
    assert stack.find_process([MARKER]) == proc.pid


def test_zombie_counts_as_dead(stack, sleeper) -> None:
    proc = sleeper()
    proc.kill()
    deadline = time.monotonic() + 5
    while stack.pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not stack.pid_alive(proc.pid)
    assert stack._pid_exists(proc.pid)  # not reaped yet: still a zombie
    proc.wait()
    assert not stack._pid_exists(proc.pid)


def test_stop_pid_graceful(stack, sleeper) -> None:
    proc = sleeper()
    assert stack.stop_pid(proc.pid, [(signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)]) == "stopped"
    assert proc.wait() == -signal.SIGTERM


def test_stop_pid_escalates_to_kill(stack, sleeper) -> None:
    proc = sleeper("stubborn")
    assert stack.stop_pid(proc.pid, [(signal.SIGTERM, 0.3), (signal.SIGKILL, 5.0)]) == "killed"
    assert proc.wait() == -signal.SIGKILL


def test_stop_pid_of_gone_process(stack) -> None:
    assert stack.stop_pid(_dead_pid(), [(signal.SIGTERM, 1.0)]) == "stopped"


def test_port_taken_names_port_and_env_var(stack) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert stack.port_in_use(port)
        with pytest.raises(stack.StackError) as info:
            stack.ensure_port_free(port, "kafka", "BALLAST_KAFKA_PORT")
    message = info.value.message
    assert f"port {port} (kafka)" in message
    assert "set BALLAST_KAFKA_PORT" in message
    assert f"pid {os.getpid()}" in message  # the holder is this test process


def test_bound_but_not_listening_port_is_taken(stack) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assert stack.port_in_use(s.getsockname()[1])


def test_free_port_passes(stack) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not stack.port_in_use(port)
    stack.ensure_port_free(port, "postgres", "BALLAST_PG_PORT")


def _pg_cfg(stack, tmp_path: Path):
    cfg = stack.load_config({"BALLAST_STATE_DIR": str(tmp_path)})
    cfg.pg_data.mkdir(parents=True)
    cfg.pg_socket_dir.mkdir()
    return cfg


def test_lock_files_of_a_zombie_postmaster_are_removed(stack, sleeper, tmp_path: Path) -> None:
    cfg = _pg_cfg(stack, tmp_path)
    zombie = sleeper()
    zombie.kill()
    while stack.pid_alive(zombie.pid):
        time.sleep(0.02)
    lock = cfg.pg_data / "postmaster.pid"
    sock_lock = cfg.pg_socket_dir / ".s.PGSQL.15432.lock"
    for f in (lock, sock_lock):
        f.write_text(f"{zombie.pid}\n{cfg.pg_data}\n")
    stack.clear_dead_postmaster(cfg, wait_s=0.3)
    assert not lock.exists()
    assert not sock_lock.exists()


def test_lock_file_of_a_vanished_pid_is_left_to_postgres(stack, tmp_path: Path) -> None:
    cfg = _pg_cfg(stack, tmp_path)
    lock = cfg.pg_data / "postmaster.pid"
    lock.write_text(f"{_dead_pid()}\n")
    stack.clear_dead_postmaster(cfg, wait_s=0.3)
    assert lock.exists()


def test_orphan_in_data_dir_blocks_the_start(stack, sleeper, tmp_path: Path) -> None:
    cfg = _pg_cfg(stack, tmp_path)
    orphan = sleeper(cwd=cfg.pg_data)
    lock = cfg.pg_data / "postmaster.pid"
    lock.write_text(f"{_dead_pid()}\n")
    with pytest.raises(stack.StackError, match=f"pids {orphan.pid}"):
        stack.clear_dead_postmaster(cfg, wait_s=0.3)
    assert lock.exists()


def _fake_tool(directory: Path, name: str, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    return tool


def test_old_java_is_refused(stack, tmp_path: Path, monkeypatch) -> None:
    _fake_tool(tmp_path / "jdk" / "bin", "java", "echo 'openjdk version \"11.0.2\"' >&2\n")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(stack.StackError, match=r"needs Java 17\+, found Java 11"):
        stack.find_java()


def test_missing_java(stack, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nojdk"))
    with pytest.raises(stack.StackError, match="`java` was not found"):
        stack.find_java()


def test_missing_maven(stack, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    cfg = stack.load_config({"BALLAST_STATE_DIR": str(tmp_path)})
    with pytest.raises(stack.StackError, match=r"Maven \(`mvn`\) is needed"):
        stack.fetch_jars(cfg)


def test_maven_failure_shows_its_last_lines(stack, tmp_path: Path, monkeypatch) -> None:
    bindir = tmp_path / "bin"
    _fake_tool(bindir, "mvn", "echo '[ERROR] Could not resolve kafka_2.13'\nexit 1\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cfg = stack.load_config({"BALLAST_STATE_DIR": str(tmp_path / "state")})
    cfg.kafka_dir.mkdir(parents=True)
    with pytest.raises(stack.StackError) as info:
        stack.fetch_jars(cfg)
    assert "Maven failed to download the Kafka 3.9.1 jars (exit 1)" in info.value.message
    assert info.value.context == ["[ERROR] Could not resolve kafka_2.13"]
    assert not stack.jars_ready(cfg)


def test_errors_are_one_stack_line_without_traceback(stack, capsys) -> None:
    assert stack.main(["createdb", "bad name"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["stack: invalid database name 'bad name': use 1-63 letters, digits, _ or -, "
                   "starting with a letter or _"]  # fmt: skip


def test_status_of_an_empty_state_dir_exits_1(stack, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BALLAST_STATE_DIR", str(tmp_path / "never-started"))
    assert stack.main(["status"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["kafka", "stopped"], ["postgres", "stopped"]]
    assert all(line.endswith("ready no") for line in out)


def test_down_of_an_empty_state_dir_is_fine(stack, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BALLAST_STATE_DIR", str(tmp_path / "never-started"))
    assert stack.main(["down"]) == 0
    assert stack.main(["down"]) == 0
    assert "kafka     not running" in capsys.readouterr().out
