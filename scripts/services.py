#!/usr/bin/env python3
"""Start, check and stop Ballast's six services and the custodian simulator locally.

Each runs as its own uvicorn process, with its log in <state>/services/<profile>/<name>.log.
The services read BALLAST_* settings from the environment this script is given (database
URL, Kafka, topic prefix, trace file); `--port-base N` puts them on N+1 ... N+6, the
simulator on N+9.

  python3 scripts/services.py up [--profile demo] [--port-base 8000]
  python3 scripts/services.py status [--profile demo]
  python3 scripts/services.py down [--profile demo]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("BALLAST_STATE_DIR", ROOT / ".state"))
VENV_BIN = ROOT / ".venv" / "bin"


@dataclass(frozen=True)
class Service:
    name: str
    app: str
    offset: int


SERVICES = (
    Service("account-svc", "account_svc.main:app", 1),
    Service("model-hub-svc", "model_hub_svc.main:app", 2),
    Service("rebalance-svc", "rebalance_svc.main:app", 3),
    Service("taxlot-svc", "taxlot_svc.main:app", 4),
    Service("custodian-gateway", "custodian_gateway.main:app", 5),
    Service("reporting-svc", "reporting_svc.main:app", 6),
    Service("custodian-sim", "custodian_sim.main:app", 9),
)


class LaunchError(Exception):
    pass


def run_dir(profile: str) -> Path:
    return STATE / "services" / profile


def urls(port_base: int) -> dict[str, str]:
    return {s.name: f"http://127.0.0.1:{port_base + s.offset}" for s in SERVICES}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: connections of a previous run in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ready(url: str, path: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url + path, timeout=2) as response:
            return response.status == 200, response.read().decode()[:300]
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode()[:300]
    except (urllib.error.URLError, OSError) as exc:
        return False, str(exc)


def _read_state(profile: str) -> dict[str, dict[str, object]]:
    path = run_dir(profile) / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def up(
    profile: str, port_base: int, timeout_s: float = 90.0, quiet: bool = False
) -> dict[str, str]:
    """Start every service not already running; wait until each answers /readyz."""
    folder = run_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    uvicorn = VENV_BIN / "uvicorn"
    if not uvicorn.exists():
        raise LaunchError("services: no virtualenv; run `make setup` first")
    state = _read_state(profile)
    service_urls = urls(port_base)
    env = dict(os.environ)
    env.setdefault("CUSTODIAN_GATEWAY_CUSTODIAN_URL", service_urls["custodian-sim"])
    # The simulator must be up before the gateway starts sending to it.
    for service in sorted(SERVICES, key=lambda s: s.name != "custodian-sim"):
        known = state.get(service.name)
        if known and _pid_alive(int(known["pid"])):  # type: ignore[arg-type]
            continue
        port = port_base + service.offset
        if not _port_free(port):
            raise LaunchError(
                f"services: port {port} (for {service.name}) is already in use by another "
                f"process; stop it or choose other ports with --port-base"
            )
        log = open(folder / f"{service.name}.log", "ab")  # noqa: SIM115 (owned by the child)
        process = subprocess.Popen(
            [
                str(uvicorn),
                service.app,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        state[service.name] = {"pid": process.pid, "url": service_urls[service.name]}
        (folder / "state.json").write_text(json.dumps(state, indent=2))
    deadline = time.monotonic() + timeout_s
    pending = {s.name for s in SERVICES}
    while pending:
        for name in sorted(pending):
            path = "/healthz" if name == "custodian-sim" else "/readyz"
            ok, _ = _ready(service_urls[name], path)
            pid = int(state[name]["pid"])  # type: ignore[arg-type]
            if ok:
                pending.discard(name)
                if not quiet:
                    print(f"services: {name:<18} ready   {service_urls[name]}")
            elif not _pid_alive(pid):
                raise LaunchError(
                    f"services: {name} exited during start-up; last lines of "
                    f"{folder / (name + '.log')}:\n{_tail(folder / (name + '.log'))}"
                )
        if pending and time.monotonic() > deadline:
            details = "; ".join(
                f"{n}: {_ready(service_urls[n], '/readyz')[1]}" for n in sorted(pending)
            )
            raise LaunchError(f"services: not ready after {timeout_s:.0f}s: {details}")
        if pending:
            time.sleep(0.3)
    return service_urls


def down(profile: str) -> None:
    state = _read_state(profile)
    for info in state.values():
        pid = int(info["pid"])  # type: ignore[arg-type]
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
    deadline = time.monotonic() + 15
    for name, info in state.items():
        pid = int(info["pid"])  # type: ignore[arg-type]
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if _pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        print(f"services: {name:<18} stopped")
    (run_dir(profile) / "state.json").unlink(missing_ok=True)


def status(profile: str) -> int:
    state = _read_state(profile)
    if not state:
        print(f"services: none running for profile {profile}")
        return 1
    all_ok = True
    for name, info in state.items():
        alive = _pid_alive(int(info["pid"]))  # type: ignore[arg-type]
        ok = alive and _ready(str(info["url"]), "/healthz")[0]
        all_ok &= ok
        print(
            f"services: {name:<18} {'running' if alive else 'stopped':<8} pid {info['pid']:<8} "
            f"{info['url']}  {'healthy' if ok else 'not healthy'}"
        )
    return 0 if all_ok else 1


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--profile", default="dev", help="separates runs (dev, demo, test)")
    parser.add_argument("--port-base", type=int, default=8000)
    args = parser.parse_args()
    try:
        if args.command == "up":
            up(args.profile, args.port_base)
            return 0
        if args.command == "down":
            down(args.profile)
            return 0
        return status(args.profile)
    except LaunchError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
