#!/usr/bin/env python3
"""Start, check and stop Ballast's six services and the custodian simulator locally.

`up` first migrates every service's schema once (`python -m ballast_common.migrations
upgrade --all`, output in <state>/services/<profile>/migrate.log), then starts each service
as its own uvicorn process with BALLAST_MIGRATE_ON_START=false, so replicas never race to
migrate. The services read BALLAST_* settings from the environment this script is given
(database URL, Kafka, topic prefix, trace file).

Kafka principals (docs/stack.md): when the stack has them (its credentials file, or
BALLAST_KAFKA_SECURITY_PROTOCOL=SASL_* in the env), `up` first applies every principal's ACLs
for BALLAST_TOPIC_PREFIX (`python -m ballast_common.kafka_acls | stack.py acls`), then starts
each service as its own principal (BALLAST_KAFKA_USERNAME/PASSWORD), never as the admin.

Database roles (docs/auth.md): the migration step runs as the owner in BALLAST_DATABASE_URL
and creates one role per service (`ballast_taxlot_svc`...; passwords made once, in
<state>/postgres/app-roles.json) with DML on that service's schema only; each service then
connects as its role, under the tenant policies of ballast_common.tenancy.

Ports: `--port-base N` puts the services on N+1 ... N+6 and the simulator on N+9. Replica r
(r = 1, 2, ...) of a service listens on N + offset + 10*r (rebalance-svc, offset 3:
N+3, N+13, N+23); at most 9 instances per service, so a profile stays within N+1 ... N+99.
Logs: <state>/services/<profile>/<service>.log, and <service>.<r>.log for replica r.

  python3 scripts/services.py up [--profile demo] [--port-base 8000] [--timeout 90]
                                 [--replicas rebalance-svc=2,taxlot-svc=2 | all=2]
  python3 scripts/services.py status [--profile demo]
  python3 scripts/services.py down [--profile demo]

`--replicas all=2` gives every consumer service two instances (never the custodian
simulator: one process per book); a named service overrides `all`. `up` starts what is not
running yet and never stops an instance.

The custodian simulator keeps its book in SIM_STORE_PATH, by default
<state>/services/<profile>/custodian-sim-<digest>.sqlite3, one file per system it serves
(database and topic prefix): a restarted simulator finds its book again, a fresh system (a
new demo run, a test's own database) starts with an empty one.

Orders go to the simulator over its HTTP API unless `--order-protocol fix` (or
BALLAST_ORDER_PROTOCOL=fix, e.g. `BALLAST_ORDER_PROTOCOL=fix make demo`): the simulator then
also listens for FIX 4.4 on N+8 (SIM_FIX_PORT) and custodian-gateway sends its orders over
a FIX session to it (CUSTODIAN_GATEWAY_ORDER_PROTOCOL=fix, docs/fix.md), as one instance
(one session per pair of comp ids), its session stores in
<state>/services/<profile>/custodian-gateway-fix-<digest>/, beside the simulator's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("BALLAST_STATE_DIR", ROOT / ".state"))
VENV_BIN = ROOT / ".venv" / "bin"
MIGRATE_ARGS = ["-m", "ballast_common.migrations", "upgrade", "--all"]
ACL_ARGS = ["-m", "ballast_common.kafka_acls", "--prefix"]
REPLICA_PORT_STEP = 10
MAX_INSTANCES = 9
FIX_PORT_OFFSET = 8  # the simulator's FIX acceptor, with --order-protocol fix
ORDER_PROTOCOLS = ("http", "fix")


@dataclass(frozen=True)
class Service:
    name: str
    app: str
    offset: int
    scalable: bool = True  # a consumer that may run as several instances
    has_database: bool = True  # a schema of its own, reached as a role of its own


SERVICES = (
    Service("account-svc", "account_svc.main:app", 1),
    Service("model-hub-svc", "model_hub_svc.main:app", 2),
    Service("rebalance-svc", "rebalance_svc.main:app", 3),
    Service("taxlot-svc", "taxlot_svc.main:app", 4),
    Service("custodian-gateway", "custodian_gateway.main:app", 5),
    Service("reporting-svc", "reporting_svc.main:app", 6),
    Service("custodian-sim", "custodian_sim.main:app", 9, scalable=False, has_database=False),
)


@dataclass(frozen=True)
class Instance:
    """Replica `replica` of `service`; replica 0 is the one on the documented port."""

    service: Service
    replica: int

    @property
    def name(self) -> str:
        return self.service.name if self.replica == 0 else f"{self.service.name}.{self.replica}"

    def port(self, port_base: int) -> int:
        return port_base + self.service.offset + REPLICA_PORT_STEP * self.replica

    def url(self, port_base: int) -> str:
        return f"http://127.0.0.1:{self.port(port_base)}"

    @property
    def health_path(self) -> str:
        return "/healthz" if self.service.name == "custodian-sim" else "/readyz"


@dataclass(frozen=True)
class Running:
    """One instance as recorded in a profile's state file."""

    service: str
    replica: int
    name: str
    pid: int
    url: str
    alive: bool


class LaunchError(Exception):
    pass


def run_dir(profile: str) -> Path:
    return STATE / "services" / profile


def _system_digest(env: Mapping[str, str]) -> str:
    system = f"{env.get('BALLAST_DATABASE_URL', '')}|{env.get('BALLAST_TOPIC_PREFIX', '')}"
    return hashlib.sha256(system.encode()).hexdigest()[:12]


def simulator_store(profile: str, env: Mapping[str, str]) -> Path:
    """The custodian simulator's book for the system `env` describes (its database and
    topic prefix) in `profile`."""
    return run_dir(profile) / f"custodian-sim-{_system_digest(env)}.sqlite3"


def gateway_fix_store(profile: str, env: Mapping[str, str]) -> Path:
    """custodian-gateway's FIX session stores for the system `env` describes: they go with
    the simulator's book (and its session's sequence numbers), one pair per system."""
    return run_dir(profile) / f"custodian-gateway-fix-{_system_digest(env)}"


def order_protocol(requested: str | None, env: Mapping[str, str]) -> str:
    """How orders go to the simulator: `requested`, else BALLAST_ORDER_PROTOCOL, else http."""
    protocol = (requested or env.get("BALLAST_ORDER_PROTOCOL") or "http").strip().lower()
    if protocol not in ORDER_PROTOCOLS:
        raise LaunchError(
            f"services: the order protocol must be http or fix, got {protocol!r} "
            "(--order-protocol or BALLAST_ORDER_PROTOCOL)"
        )
    return protocol


def fix_env(profile: str, port_base: int, env: Mapping[str, str]) -> dict[str, str]:
    """The settings that put the gateway's orders on a FIX session to the simulator."""
    port = str(port_base + FIX_PORT_OFFSET)
    return {
        "SIM_FIX_PORT": port,
        "CUSTODIAN_GATEWAY_ORDER_PROTOCOL": "fix",
        "CUSTODIAN_GATEWAY_FIX_HOST": "127.0.0.1",
        "CUSTODIAN_GATEWAY_FIX_PORT": port,
        "CUSTODIAN_GATEWAY_FIX_STORE_DIR": str(gateway_fix_store(profile, env)),
    }


def urls(port_base: int) -> dict[str, str]:
    """The URL of each service's first instance (the documented ports)."""
    return {s.name: Instance(s, 0).url(port_base) for s in SERVICES}


def service_by_name(name: str) -> Service:
    for service in SERVICES:
        if service.name == name:
            return service
    known = ", ".join(s.name for s in SERVICES)
    raise LaunchError(f"services: unknown service {name!r} (known: {known}, or all)")


def resolve_replicas(requested: Mapping[str, int] | None) -> dict[str, int]:
    """Instances per service: 1 unless asked; `all` sets every scalable one, names win."""
    counts = {s.name: 1 for s in SERVICES}
    # `all` first, so that a named service overrides it whatever the order given.
    ordered = sorted((requested or {}).items(), key=lambda item: item[0] != "all")
    for name, count in ordered:
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_INSTANCES:
            raise LaunchError(
                f"services: replicas for {name} must be a whole number from 1 to "
                f"{MAX_INSTANCES}, got {count!r}"
            )
        if name == "all":
            counts.update({s.name: count for s in SERVICES if s.scalable})
            continue
        service = service_by_name(name)
        if not service.scalable and count != 1:
            raise LaunchError(
                f"services: {name} runs as one instance only (its state is in memory)"
            )
        counts[name] = count
    return counts


def parse_replicas(text: str) -> dict[str, int]:
    """`rebalance-svc=2,taxlot-svc=3` or `all=2` -> {name: count}, checked."""
    requested: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise LaunchError(
                f"services: --replicas item {item!r} is not SERVICE=COUNT "
                f"(e.g. rebalance-svc=2 or all=2)"
            )
        try:
            count = int(value)
        except ValueError:
            raise LaunchError(
                f"services: --replicas {name}={value!r}: the count is not a whole number"
            ) from None
        if name in requested:
            raise LaunchError(f"services: --replicas names {name} twice")
        requested[name] = count
    resolve_replicas(requested)  # checks names and counts
    return requested


def plan(replicas: Mapping[str, int] | None = None) -> list[Instance]:
    """Every instance to run, simulator first (the gateway sends to it from the start)."""
    counts = resolve_replicas(replicas)
    ordered = sorted(SERVICES, key=lambda s: s.name != "custodian-sim")
    return [Instance(s, r) for s in ordered for r in range(counts[s.name])]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):  # reap our own child if it has exited
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
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
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # HTTPException: nothing answers HTTP there yet. On a port inside the ephemeral range
        # a probe of a port nobody listens on can even connect to itself and read back its
        # own request (BadStatusLine).
        return False, str(exc)


def _read_state(profile: str) -> dict[str, dict[str, Any]]:
    path = run_dir(profile) / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _write_state(profile: str, state: dict[str, dict[str, Any]]) -> None:
    (run_dir(profile) / "state.json").write_text(json.dumps(state, indent=2))


def instances(profile: str) -> list[Running]:
    """The instances a profile's state file records, with whether each is still alive."""
    out = []
    for name, info in _read_state(profile).items():
        pid = int(info["pid"])
        out.append(
            Running(
                service=str(info.get("service", name)),
                replica=int(info.get("replica", 0)),
                name=name,
                pid=pid,
                url=str(info["url"]),
                alive=_pid_alive(pid),
            )
        )
    return out


def pids(profile: str) -> dict[str, dict[int, int]]:
    """{service: {replica: pid}} of the instances recorded for `profile`."""
    out: dict[str, dict[int, int]] = {}
    for running in instances(profile):
        out.setdefault(running.service, {})[running.replica] = running.pid
    return out


def kill(profile: str, service: str, replica: int = 0, sig: int = signal.SIGKILL) -> int:
    """Send `sig` (SIGKILL unless told) to one instance's process group; return its pid."""
    pid = pids(profile).get(service, {}).get(replica)
    if pid is None:
        raise LaunchError(f"services: no instance {replica} of {service} in profile {profile}")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    return pid


def migrate(profile: str, env: Mapping[str, str], timeout_s: float, quiet: bool) -> None:
    """Bring every service's schema to head, once, before any service starts."""
    log_path = run_dir(profile) / "migrate.log"
    try:
        result = subprocess.run(
            [str(VENV_BIN / "python"), *MIGRATE_ARGS],
            cwd=ROOT,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LaunchError(f"services: migrations did not finish within {timeout_s:.0f}s") from exc
    with open(log_path, "a") as log:
        log.write(result.stdout + result.stderr)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise LaunchError(
            f"services: migrations failed (exit {result.returncode}); no service started; "
            f"full output in {log_path}:\n{output}"
        )
    if not quiet:
        for line in result.stdout.splitlines():
            print(f"services: {line}")


def kafka_uses_sasl(env: Mapping[str, str]) -> bool:
    """Each service gets its own Kafka principal: the env says SASL (`stack.py env`), or says
    nothing and the local stack's broker has principals; an explicit
    BALLAST_KAFKA_SECURITY_PROTOCOL=PLAINTEXT keeps the services without credentials."""
    protocol = env.get("BALLAST_KAFKA_SECURITY_PROTOCOL", "").strip().upper()
    if protocol:
        return protocol.startswith("SASL_")
    # scripts/stack.py writes scram-users once the broker has its SCRAM users
    return (STATE / "kafka" / "scram-users").is_file()


def kafka_credentials() -> dict[str, str]:
    """Each principal's password, as scripts/stack.py keeps them in its state folder ({} when
    that folder has none: the services then get no Kafka credentials at all, never the
    admin's, and a service that needs Kafka says so when it starts)."""
    path = STATE / "kafka" / "credentials.json"
    if not path.is_file():
        return {}
    try:
        credentials = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LaunchError(f"services: cannot read the Kafka credentials in {path}: {exc}") from None
    return {str(k): str(v) for k, v in credentials.items()}


def apply_kafka_acls(env: Mapping[str, str], timeout_s: float) -> None:
    """The ACLs of every principal for this run's topic prefix (python -m
    ballast_common.kafka_acls, applied by the stack's admin through stack.py)."""
    prefix = env.get("BALLAST_TOPIC_PREFIX", "")
    lines = subprocess.run(
        [str(VENV_BIN / "python"), *ACL_ARGS, prefix],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if lines.returncode != 0:
        raise LaunchError(f"services: could not generate the Kafka ACLs: {lines.stderr.strip()}")
    applied = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stack.py"), "acls"],
        input=lines.stdout,
        cwd=ROOT,
        env={**env, "BALLAST_STATE_DIR": str(STATE)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if applied.returncode != 0:
        raise LaunchError(
            f"services: applying the Kafka ACLs failed; no service started:\n"
            f"{(applied.stdout + applied.stderr).strip()}"
        )


def database_roles() -> dict[str, str]:
    """Each service's PostgreSQL role and its password, made on first use and kept in the
    state folder (the migration step creates the roles: docs/auth.md, tenant isolation)."""
    path = STATE / "postgres" / "app-roles.json"
    try:
        roles = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise LaunchError(f"services: cannot read the database roles in {path}: {exc}") from None
    wanted = {database_role(s): "" for s in SERVICES if s.has_database}
    if set(wanted) - set(roles):
        roles = {name: roles.get(name) or secrets.token_urlsafe(24) for name in wanted}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(roles, indent=2) + "\n")
        path.chmod(0o600)
    return {str(k): str(v) for k, v in roles.items()}


def database_role(service: Service) -> str:
    return "ballast_" + service.name.replace("-", "_")


def settings_prefix(service: Service) -> str:
    """The service's own settings prefix (`service_config("TAXLOT_SVC_")`)."""
    return service.name.upper().replace("-", "_") + "_"


def with_role(url: str, role: str, password: str) -> str:
    """`url` (the owner's) with another user and password."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    credentials = f"{urllib.parse.quote(role)}:{urllib.parse.quote(password, safe='')}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))


def database_env(env: Mapping[str, str], roles: Mapping[str, str]) -> dict[str, str]:
    """What the migration step gets: the owner's URL for migrating, and each service's own
    URL (whose role the step creates and grants exactly the service's schema)."""
    owner = env.get("BALLAST_DATABASE_URL", "")
    if not owner:
        return {}
    out = {"BALLAST_DATABASE_OWNER_URL": owner}
    for service in SERVICES:
        if service.has_database:
            role = database_role(service)
            out[settings_prefix(service) + "DATABASE_URL"] = with_role(owner, role, roles[role])
    return out


def service_env(
    service: Service,
    env: Mapping[str, str],
    credentials: Mapping[str, str] | None,
    databases: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """One service's environment: its own database role (`databases` from database_env),
    under SASL (`credentials` not None) its own Kafka principal, and never the owner's or the
    admin's credentials the stack's env carries."""
    databases = databases or {}
    own = {k: v for k, v in env.items() if k not in databases}
    own.pop("BALLAST_DATABASE_OWNER_URL", None)
    if databases and service.has_database:
        own["BALLAST_DATABASE_URL"] = databases[settings_prefix(service) + "DATABASE_URL"]
    elif databases:
        own.pop("BALLAST_DATABASE_URL", None)
    if credentials is not None:
        own.setdefault("BALLAST_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        own.setdefault("BALLAST_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        own.pop("BALLAST_KAFKA_USERNAME", None)
        own.pop("BALLAST_KAFKA_PASSWORD", None)
        if service.name in credentials:
            own["BALLAST_KAFKA_USERNAME"] = service.name
            own["BALLAST_KAFKA_PASSWORD"] = credentials[service.name]
    return own


def _start(instance: Instance, port_base: int, env: Mapping[str, str], folder: Path) -> int:
    log = open(folder / f"{instance.name}.log", "ab")  # noqa: SIM115 (owned by the child)
    process = subprocess.Popen(
        [
            str(VENV_BIN / "uvicorn"),
            instance.service.app,
            "--host",
            "127.0.0.1",
            "--port",
            str(instance.port(port_base)),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return process.pid


def up(
    profile: str,
    port_base: int,
    timeout_s: float = 90.0,
    quiet: bool = False,
    replicas: Mapping[str, int] | None = None,
    migrate_first: bool = True,
    protocol: str | None = None,
) -> dict[str, str]:
    """Migrate, then start every instance not already running; wait until each is ready.

    `replicas` is {service or "all": instances}; `migrate_first=False` skips the migration
    step (restoring a crashed instance of a system already migrated, as a supervisor would);
    `protocol` is how orders go to the simulator (http or fix; default
    BALLAST_ORDER_PROTOCOL, else http). Returns each service's first-instance URL.
    """
    folder = run_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    if not (VENV_BIN / "uvicorn").exists():
        raise LaunchError("services: no virtualenv; run `make setup` first")
    protocol = order_protocol(protocol, os.environ)
    if protocol == "fix":  # one FIX session per pair of comp ids: one gateway
        if (replicas or {}).get("custodian-gateway", 1) != 1:
            raise LaunchError(
                "services: over FIX custodian-gateway runs as one instance (one session per "
                "pair of comp ids)"
            )
        replicas = {**(replicas or {}), "custodian-gateway": 1}
    wanted = plan(replicas)
    state = _read_state(profile)
    missing = [i for i in wanted if not (i.name in state and _pid_alive(int(state[i.name]["pid"])))]
    for instance in missing:
        if not _port_free(instance.port(port_base)):
            raise LaunchError(
                f"services: port {instance.port(port_base)} (for {instance.name}) is already "
                f"in use by another process; stop it or choose other ports with --port-base"
            )
    env = dict(os.environ)
    simulator = urls(port_base).get("custodian-sim")
    if simulator:
        env.setdefault("CUSTODIAN_GATEWAY_CUSTODIAN_URL", simulator)
        env.setdefault("SIM_STORE_PATH", str(simulator_store(profile, env)))
        if protocol == "fix":
            for name, value in fix_env(profile, port_base, env).items():
                env.setdefault(name, value)
    account_svc = urls(port_base).get("account-svc")
    if account_svc:  # the dashboard's approval routes forward to it (its first instance)
        env.setdefault("REPORTING_SVC_ACCOUNT_SVC_URL", account_svc)
    taxlot_svc = urls(port_base).get("taxlot-svc")
    if taxlot_svc:  # the dashboard's exceptions routes forward to it (its first instance)
        env.setdefault("REPORTING_SVC_TAXLOT_SVC_URL", taxlot_svc)
    credentials = kafka_credentials() if kafka_uses_sasl(env) else None
    if missing and credentials:
        apply_kafka_acls(env, timeout_s)
    databases = database_env(env, database_roles()) if missing else {}
    if missing and migrate_first:
        migrate(profile, {**env, **databases}, timeout_s, quiet)
    env["BALLAST_MIGRATE_ON_START"] = "false"
    for instance in missing:
        state[instance.name] = {
            "service": instance.service.name,
            "replica": instance.replica,
            "pid": _start(
                instance,
                port_base,
                service_env(instance.service, env, credentials, databases),
                folder,
            ),
            "url": instance.url(port_base),
        }
        _write_state(profile, state)
    _wait_ready(wanted, state, folder, timeout_s, quiet)
    return urls(port_base)


def _wait_ready(
    wanted: list[Instance],
    state: dict[str, dict[str, Any]],
    folder: Path,
    timeout_s: float,
    quiet: bool,
) -> None:
    deadline = time.monotonic() + timeout_s
    pending = {i.name: i for i in wanted}
    while pending:
        for name, instance in sorted(pending.items()):
            url = str(state[name]["url"])
            ok, _ = _ready(url, instance.health_path)
            if ok:
                del pending[name]
                if not quiet:
                    print(f"services: {name:<20} ready   {url}")
            elif not _pid_alive(int(state[name]["pid"])):
                raise LaunchError(
                    f"services: {name} exited during start-up; last lines of "
                    f"{folder / (name + '.log')}:\n{_tail(folder / (name + '.log'))}"
                )
        if pending and time.monotonic() > deadline:
            details = "; ".join(
                f"{n}: {_ready(str(state[n]['url']), '/readyz')[1]}" for n in sorted(pending)
            )
            raise LaunchError(f"services: not ready after {timeout_s:.0f}s: {details}")
        if pending:
            time.sleep(0.3)


def down(profile: str) -> None:
    recorded = instances(profile)
    for running in recorded:
        if running.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for running in recorded:
        while _pid_alive(running.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(running.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.pid, signal.SIGKILL)
        print(f"services: {running.name:<20} stopped")
    (run_dir(profile) / "state.json").unlink(missing_ok=True)


def status(profile: str) -> int:
    recorded = instances(profile)
    if not recorded:
        print(f"services: none running for profile {profile}")
        return 1
    all_ok = True
    for running in sorted(recorded, key=lambda r: (r.service, r.replica)):
        ok = running.alive and _ready(running.url, "/healthz")[0]
        all_ok &= ok
        print(
            f"services: {running.name:<20} {'running' if running.alive else 'stopped':<8} "
            f"pid {running.pid:<8} {running.url}  {'healthy' if ok else 'not healthy'}"
        )
    return 0 if all_ok else 1


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--profile", default="dev", help="separates runs (dev, demo, test)")
    parser.add_argument("--port-base", type=int, default=8000)
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="seconds `up` waits for readiness"
    )
    parser.add_argument(
        "--order-protocol",
        choices=ORDER_PROTOCOLS,
        default=None,
        help="how custodian-gateway sends orders to the simulator for `up` "
        "(default: BALLAST_ORDER_PROTOCOL, else http)",
    )
    parser.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="SERVICE=N,...",
        help="instances per consumer service for `up`, e.g. rebalance-svc=2 or all=2",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "up":
            replicas = parse_replicas(",".join(args.replicas))
            up(
                args.profile,
                args.port_base,
                timeout_s=args.timeout,
                replicas=replicas,
                protocol=args.order_protocol,
            )
            return 0
        if args.replicas:
            raise LaunchError("services: --replicas applies to `up` only")
        if args.order_protocol:
            raise LaunchError("services: --order-protocol applies to `up` only")
        if args.command == "down":
            down(args.profile)
            return 0
        return status(args.profile)
    except LaunchError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
