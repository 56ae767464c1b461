#!/usr/bin/env python3
"""The local Ballast stack without docker: one Kafka broker (KRaft) and one PostgreSQL cluster.

Standard library only: it runs with the system ``python3`` before any venv exists.

    python3 scripts/stack.py up            # start (or reuse) both, wait until ready
    python3 scripts/stack.py status        # exit 0 only if both are running and ready
    python3 scripts/stack.py env           # export lines for the connection settings
    python3 scripts/stack.py createdb NAME # idempotent
    python3 scripts/stack.py dropdb NAME   # idempotent
    python3 scripts/stack.py logs kafka|postgres
    python3 scripts/stack.py acls < LINES  # apply Kafka ACLs (python -m ballast_common.kafka_acls)
    python3 scripts/stack.py down          # stop both by pid; idempotent

See docs/stack.md for the environment variables and the files under the state folder.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "3.9.1"
HOST = "127.0.0.1"
PG_PREFERRED_MAJOR = "15"
PG_USER = "ballast"
PG_PASSWORD = "ballast"
PG_DATABASE = "ballast"
PG_MAX_CONNECTIONS = 200
PG_SHARED_BUFFERS = "2GB"
KAFKA_HEAP = "512m"
MIN_JAVA = 17

DEFAULT_KAFKA_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_SASL_PORT = 19094
DEFAULT_PG_PORT = 15432
DEFAULT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0

REPO = Path(__file__).resolve().parent.parent
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
KAFKA_ADMIN_TOOL = Path(__file__).resolve().parent / "kafka" / "BallastKafkaAdmin.java"

# Kafka principals (docs/stack.md). The services authenticate with SCRAM-SHA-512 on the SASL
# listener; `admin` is the super user of the stack and the tests; anyone on the PLAINTEXT
# listener is User:ANONYMOUS, the read-only observer. The same list as
# ballast_common.kafka_acls.SERVICE_PRINCIPALS (a test keeps them equal).
SCRAM_MECHANISM = "SCRAM-SHA-512"
KAFKA_ADMIN_USER = "admin"
SERVICE_PRINCIPALS = (
    "account-svc",
    "model-hub-svc",
    "rebalance-svc",
    "taxlot-svc",
    "custodian-gateway",
    "reporting-svc",
    "custodian-sim",
)
KAFKA_PRINCIPALS = (KAFKA_ADMIN_USER, *SERVICE_PRINCIPALS)
# The observer's grants: every topic readable, any group but the services' (whose DENY comes
# with each prefix's ACLs from ballast_common.kafka_acls).
OBSERVER_ACLS = (
    "ALLOW User:ANONYMOUS TOPIC LITERAL * DESCRIBE",
    "ALLOW User:ANONYMOUS TOPIC LITERAL * READ",
    "ALLOW User:ANONYMOUS GROUP LITERAL * READ",
)
ACL_LINE_RE = re.compile(
    r"(ALLOW|DENY) User:[\w.@-]+ (TOPIC|GROUP) (LITERAL|PREFIXED) \S+ "
    r"(READ|WRITE|DESCRIBE|CREATE|DELETE|ALTER|ALL)"
)


class StackError(Exception):
    """A failure reported to the user as one ``stack: ...`` line (plus optional context)."""

    def __init__(self, message: str, context: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.context = list(context)


class ProtocolError(Exception):
    """A Kafka response that is truncated, malformed or carries an error code."""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- configuration


def _port_from_env(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise StackError(f"{name}={port} is outside 1..65535")
    return port


@dataclass(frozen=True)
class Config:
    state: Path
    kafka_port: int
    controller_port: int
    pg_port: int
    sasl_port: int
    pg_fsync: bool
    pg_shared_buffers: str
    pg_os_user: str
    timeout: float

    @property
    def kafka_dir(self) -> Path:
        return self.state / "kafka"

    @property
    def jars_dir(self) -> Path:
        return self.kafka_dir / f"jars-{KAFKA_VERSION}"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def server_properties(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.kafka_dir / "log4j.properties"

    @property
    def credentials_file(self) -> Path:
        return self.kafka_dir / "credentials.json"

    @property
    def scram_users_file(self) -> Path:
        """The SCRAM users the broker has (written after formatting or adding them)."""
        return self.kafka_dir / "scram-users"

    @property
    def admin_properties(self) -> Path:
        return self.kafka_dir / "admin.properties"

    @property
    def cluster_id_file(self) -> Path:
        return self.kafka_dir / "cluster-id"

    @property
    def kafka_pid_file(self) -> Path:
        return self.kafka_dir / "kafka.pid"

    @property
    def pg_dir(self) -> Path:
        return self.state / "postgres"

    @property
    def pg_data(self) -> Path:
        return self.pg_dir / "data"

    @property
    def pg_socket_dir(self) -> Path:
        return self.pg_dir / "run"

    @property
    def pg_pid_file(self) -> Path:
        return self.pg_dir / "postgres.pid"

    @property
    def logs_dir(self) -> Path:
        return self.state / "logs"

    @property
    def kafka_log(self) -> Path:
        return self.logs_dir / "kafka.log"

    @property
    def pg_log(self) -> Path:
        return self.logs_dir / "postgres.log"

    @property
    def kafka_address(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def sasl_address(self) -> str:
        return f"{HOST}:{self.sasl_port}"

    @property
    def pg_address(self) -> str:
        return f"{HOST}:{self.pg_port}"


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    state_raw = env.get("BALLAST_STATE_DIR", "").strip()
    state = Path(state_raw).expanduser().resolve() if state_raw else REPO / ".state"
    kafka_port = _port_from_env(env, "BALLAST_KAFKA_PORT", DEFAULT_KAFKA_PORT)
    controller_port = _port_from_env(env, "BALLAST_KAFKA_CONTROLLER_PORT", DEFAULT_CONTROLLER_PORT)
    pg_port = _port_from_env(env, "BALLAST_PG_PORT", DEFAULT_PG_PORT)
    sasl_port = _port_from_env(env, "BALLAST_KAFKA_SASL_PORT", DEFAULT_SASL_PORT)
    ports = {
        "BALLAST_KAFKA_PORT": kafka_port,
        "BALLAST_KAFKA_CONTROLLER_PORT": controller_port,
        "BALLAST_PG_PORT": pg_port,
        "BALLAST_KAFKA_SASL_PORT": sasl_port,
    }
    if len(set(ports.values())) != len(ports):
        shown = ", ".join(f"{k}={v}" for k, v in ports.items())
        raise StackError(f"the four ports must differ ({shown})")
    fsync_raw = env.get("BALLAST_PG_FSYNC", "on").strip().lower()
    if fsync_raw not in {"on", "off", "true", "false", "1", "0", "yes", "no"}:
        raise StackError(f"BALLAST_PG_FSYNC={fsync_raw!r} must be on or off")
    shared_buffers = env.get("BALLAST_PG_SHARED_BUFFERS", "").strip() or PG_SHARED_BUFFERS
    if not re.fullmatch(r"[1-9][0-9]*(kB|MB|GB)", shared_buffers):
        raise StackError(
            f"BALLAST_PG_SHARED_BUFFERS={shared_buffers!r} must be a size such as 512MB or 2GB"
        )
    timeout_raw = env.get("BALLAST_STACK_TIMEOUT", "").strip()
    try:
        timeout = float(timeout_raw) if timeout_raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise StackError(
            f"BALLAST_STACK_TIMEOUT={timeout_raw!r} is not a number of seconds"
        ) from None
    if timeout <= 0:
        raise StackError(f"BALLAST_STACK_TIMEOUT={timeout_raw!r} must be positive")
    return Config(
        state=state,
        kafka_port=kafka_port,
        controller_port=controller_port,
        pg_port=pg_port,
        sasl_port=sasl_port,
        pg_fsync=fsync_raw in {"on", "true", "1", "yes"},
        pg_shared_buffers=shared_buffers,
        pg_os_user=env.get("BALLAST_PG_OS_USER", "").strip() or "postgres",
        timeout=timeout,
    )


def kafka_credentials(cfg: Config) -> dict[str, str]:
    """Every principal's SCRAM password, made (random) the first time and kept in the state."""
    path = cfg.credentials_file
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise StackError(f"cannot read the Kafka credentials in {path}: {exc}") from None
    if not isinstance(known, dict) or not all(isinstance(v, str) and v for v in known.values()):
        raise StackError(f"{path} is not a JSON object of principal -> password")
    missing = [p for p in KAFKA_PRINCIPALS if p not in known]
    if missing:
        known.update({p: secrets.token_urlsafe(24) for p in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    return {str(k): str(v) for k, v in known.items()}


LEGACY_WARNING = (
    "stack: WARNING: the running Kafka (pid {pid}) was started before the broker had principals "
    "(nothing listens on {sasl}): it has no ACLs, and `env` gives clients its old PLAINTEXT "
    "settings until it is restarted on fresh storage (topics and offsets are lost): "
    "`python3 scripts/stack.py down && rm -rf {data} && python3 scripts/stack.py up`"
)


def legacy_kafka(cfg: Config) -> bool:
    """A broker of this stack runs without the SASL listener (started by an older stack.py)."""
    return cfg.state.exists() and kafka_pid(cfg) is not None and not port_in_use(cfg.sasl_port)


def env_exports(cfg: Config) -> list[str]:
    url = f"postgresql://{PG_USER}:{PG_PASSWORD}@{HOST}:{cfg.pg_port}/{PG_DATABASE}"
    if legacy_kafka(cfg):
        kafka_pairs = [
            ("BALLAST_KAFKA_BOOTSTRAP", cfg.kafka_address),
            ("BALLAST_KAFKA_BOOTSTRAP_SERVERS", cfg.kafka_address),
            ("BALLAST_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        ]
    else:
        credentials = kafka_credentials(cfg)
        kafka_pairs = [
            # Clients (the tests, the CLIs) connect as the stack's admin on the SASL listener;
            # scripts/services.py gives each service its own principal instead.
            ("BALLAST_KAFKA_BOOTSTRAP", cfg.sasl_address),
            ("BALLAST_KAFKA_BOOTSTRAP_SERVERS", cfg.sasl_address),
            ("BALLAST_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("BALLAST_KAFKA_SASL_MECHANISM", SCRAM_MECHANISM),
            ("BALLAST_KAFKA_USERNAME", KAFKA_ADMIN_USER),
            ("BALLAST_KAFKA_PASSWORD", credentials[KAFKA_ADMIN_USER]),
            # The read-only observer's listener (anonymous, no credentials).
            ("BALLAST_KAFKA_OBSERVER_BOOTSTRAP", cfg.kafka_address),
        ]
    pairs = [
        ("BALLAST_STATE_DIR", str(cfg.state)),
        ("BALLAST_KAFKA_PORT", str(cfg.kafka_port)),
        ("BALLAST_KAFKA_CONTROLLER_PORT", str(cfg.controller_port)),
        ("BALLAST_KAFKA_SASL_PORT", str(cfg.sasl_port)),
        ("BALLAST_PG_PORT", str(cfg.pg_port)),
        *kafka_pairs,
        ("BALLAST_PG_HOST", HOST),
        ("BALLAST_PG_USER", PG_USER),
        ("BALLAST_PG_PASSWORD", PG_PASSWORD),
        ("BALLAST_PG_DATABASE", PG_DATABASE),
        ("BALLAST_DATABASE_URL", url),
        ("PGHOST", HOST),
        ("PGPORT", str(cfg.pg_port)),
        ("PGUSER", PG_USER),
        ("PGPASSWORD", PG_PASSWORD),
        ("PGDATABASE", PG_DATABASE),
        # The local token issuer (docs/auth.md): its keys, and the JWKS the services check
        # bearer tokens against. `ballast auth init` (or the first token) makes the key.
        ("BALLAST_AUTH_KEYS", str(cfg.state / "auth")),
        ("BALLAST_AUTH_JWKS", str(cfg.state / "auth" / "jwks.json")),
    ]
    return [f"export {name}={_shell_quote(value)}" for name, value in pairs]


def _shell_quote(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:@%+=,-]+", value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


# --------------------------------------------------------------------------- processes


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return None
    first = text.splitlines()[0].strip() if text else ""
    if not first.isdigit() or int(first) <= 0:
        return None
    return int(first)


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc entry to read: trust kill(0)
    fields = stat.rsplit(")", 1)[-1].split()
    return not (fields and fields[0] in {"Z", "X"})


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def cmdline_matches(pid: int, markers: Sequence[str]) -> bool:
    args = proc_cmdline(pid)
    return bool(args) and all(marker in args for marker in markers)


def live_pid_from_file(pid_file: Path, markers: Sequence[str]) -> int | None:
    """The pid recorded in ``pid_file`` if that process is alive and is ours.

    A file naming a dead process, a process with another command line (pid reuse) or
    holding garbage is stale: it is removed silently and None is returned.
    """
    pid = read_pid(pid_file)
    if pid is not None and pid_alive(pid) and cmdline_matches(pid, markers):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def find_process(markers: Sequence[str]) -> int | None:
    """A live process whose argv holds every marker (finds ours when the pid file is lost)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    me = os.getpid()
    for entry in entries:
        if entry.isdigit() and int(entry) != me:
            pid = int(entry)
            if cmdline_matches(pid, markers) and pid_alive(pid):
                return pid
    return None


def write_pid(pid_file: Path, pid: int) -> None:
    tmp = pid_file.with_suffix(".pid.tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def stop_pid(pid: int, steps: Sequence[tuple[signal.Signals, float]]) -> str:
    """Send each signal in turn, waiting up to its timeout for the process to go away."""
    for sig, wait_s in steps:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return "stopped"
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return "stopped" if sig != signal.SIGKILL else "killed"
            time.sleep(0.1)
    if pid_alive(pid):
        raise StackError(f"pid {pid} did not exit after {', '.join(s.name for s, _ in steps)}")
    return "killed"


def tail(path: Path, lines: int = 20) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


# --------------------------------------------------------------------------- ports


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def port_holder(port: int) -> str | None:
    """Best effort: 'pid N (command)' of the process listening on ``port``."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target in wanted:
                args = proc_cmdline(int(entry))
                command = " ... ".join([args[0], args[-1]] if len(args) > 1 else args) or "?"
                return f"pid {entry} ({command})"
    return None


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something listens on host:port or the address cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def ensure_port_free(port: int, component: str, env_var: str) -> None:
    if not port_in_use(port):
        return
    holder = port_holder(port)
    by = f"by {holder}" if holder else "by another process"
    raise StackError(
        f"port {port} ({component}) on {HOST} is already in use {by}, not by this stack; "
        f"stop that process or set {env_var} to a free port"
    )


# --------------------------------------------------------------------------- Kafka protocol


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ProtocolError(f"response truncated at byte {self.pos} (wanted {size} more)")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def array_len(self) -> int:
        n = self.int32()
        if n < -1:
            raise ProtocolError(f"invalid array length {n}")
        return n

    def nullable_string(self) -> str | None:
        n = self.int16()
        if n == -1:
            return None
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError(f"invalid string length {n} at byte {self.pos - 2}")
        value = self.data[self.pos : self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return value

    def string(self) -> str:
        value = self.nullable_string()
        if value is None:
            raise ProtocolError("null where a string is required")
        return value


API_METADATA = 3
API_VERSIONS = 18
# Metadata versions this probe can encode and decode (non-flexible ones only).
METADATA_VERSIONS = (0, 1, 4)


def encode_request(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None, body: bytes = b""
) -> bytes:
    """Size-prefixed request with header v1 (api_key, api_version, correlation_id, client_id)."""
    if client_id is None:
        cid = struct.pack(">h", -1)
    else:
        raw = client_id.encode()
        cid = struct.pack(">h", len(raw)) + raw
    payload = struct.pack(">hhi", api_key, api_version, correlation_id) + cid + body
    return struct.pack(">i", len(payload)) + payload


def encode_api_versions_request(correlation_id: int, client_id: str = "ballast-stack") -> bytes:
    return encode_request(API_VERSIONS, 0, correlation_id, client_id)


def decode_api_versions_response(payload: bytes, correlation_id: int) -> dict[int, tuple[int, int]]:
    """Decode an ApiVersions v0 response (without its size prefix): api_key -> (min, max)."""
    reader = _Reader(payload)
    got = reader.int32()
    if got != correlation_id:
        raise ProtocolError(f"correlation id {got} does not match the request's {correlation_id}")
    error_code = reader.int16()
    if error_code != 0:
        raise ProtocolError(f"ApiVersions returned error code {error_code}")
    count = reader.array_len()
    if count < 0:
        raise ProtocolError("ApiVersions returned a null api list")
    versions: dict[int, tuple[int, int]] = {}
    for _ in range(count):
        key, lo, hi = reader.int16(), reader.int16(), reader.int16()
        if lo > hi:
            raise ProtocolError(f"api {key} has min version {lo} above max {hi}")
        versions[key] = (lo, hi)
    if reader.pos != len(payload):
        raise ProtocolError(f"{len(payload) - reader.pos} unexpected trailing bytes")
    if API_VERSIONS not in versions:
        raise ProtocolError("ApiVersions response does not list ApiVersions itself")
    return versions


def pick_metadata_version(versions: Mapping[int, tuple[int, int]]) -> int:
    lo, hi = versions.get(API_METADATA, (0, -1))
    usable = [v for v in METADATA_VERSIONS if lo <= v <= hi]
    if not usable:
        raise ProtocolError(f"broker supports Metadata v{lo}..v{hi}, none of {METADATA_VERSIONS}")
    return max(usable)


def encode_metadata_request(
    version: int, correlation_id: int, client_id: str = "ballast-stack"
) -> bytes:
    """Metadata request for no topics in particular: v0 lists all, v1+ an empty list."""
    if version not in METADATA_VERSIONS:
        raise ValueError(f"unsupported Metadata version {version}")
    body = struct.pack(">i", 0)
    if version >= 4:
        body += struct.pack(">?", False)  # allow_auto_topic_creation
    return encode_request(API_METADATA, version, correlation_id, client_id, body)


def decode_metadata_brokers(
    payload: bytes, version: int, correlation_id: int
) -> list[tuple[int, str, int]]:
    """The (node_id, host, port) brokers of a Metadata response (without its size prefix)."""
    reader = _Reader(payload)
    got = reader.int32()
    if got != correlation_id:
        raise ProtocolError(f"correlation id {got} does not match the request's {correlation_id}")
    if version >= 3:
        reader.int32()  # throttle_time_ms
    count = reader.array_len()
    brokers = []
    for _ in range(max(count, 0)):
        node_id, host, port = reader.int32(), reader.string(), reader.int32()
        if version >= 1:
            reader.nullable_string()  # rack
        brokers.append((node_id, host, port))
    return brokers


def _read_frame(sock: socket.socket, limit: int = 16 * 1024 * 1024) -> bytes:
    def recv_exact(n: int) -> bytes:
        chunks = []
        while n:
            chunk = sock.recv(min(n, 65536))
            if not chunk:
                raise ProtocolError("connection closed mid-response")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    (size,) = struct.unpack(">i", recv_exact(4))
    if not 4 <= size <= limit:
        raise ProtocolError(f"implausible response size {size}")
    return recv_exact(size)


def kafka_probe(host: str, port: int, timeout: float = 3.0) -> list[tuple[int, str, int]]:
    """ApiVersions then Metadata against a broker; returns its registered brokers.

    Raises OSError if nothing answers and ProtocolError if the answer is wrong.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(encode_api_versions_request(1))
        versions = decode_api_versions_response(_read_frame(sock), 1)
        version = pick_metadata_version(versions)
        sock.sendall(encode_metadata_request(version, 2))
        return decode_metadata_brokers(_read_frame(sock), version, 2)


def kafka_ready(cfg: Config, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        brokers = kafka_probe(HOST, cfg.kafka_port, timeout)
    except (OSError, ProtocolError) as exc:
        return False, str(exc) or type(exc).__name__
    if not brokers:
        return False, "no broker registered yet"
    return True, "ok"


# --------------------------------------------------------------------------- Kafka process


def _jaas(module: str, user: str, password: str, extra: str = "") -> str:
    return f'{module} required username="{user}" password="{password}"{extra};'


def render_server_properties(cfg: Config, admin_password: str) -> str:
    """The broker's config: an anonymous read-only PLAINTEXT listener, a SASL/SCRAM listener
    for the services, and a SASL/PLAIN controller listener (SCRAM users live in the metadata
    log, which the controller must read before it could check them)."""
    kp, cp, sp = cfg.kafka_port, cfg.controller_port, cfg.sasl_port
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    admin, pw = KAFKA_ADMIN_USER, admin_password
    lines = [
        "# Written by scripts/stack.py on every `up`: edits here are overwritten.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{HOST}:{cp}",
        f"listeners=PLAINTEXT://{HOST}:{kp},SASL_PLAINTEXT://{HOST}:{sp},CONTROLLER://{HOST}:{cp}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{kp},SASL_PLAINTEXT://{HOST}:{sp}",
        "listener.security.protocol.map="
        "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
        f"listener.name.sasl_plaintext.sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
        + _jaas(scram, admin, pw),
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        "listener.name.controller.plain.sasl.jaas.config="
        + _jaas(plain, admin, pw, f' user_{admin}="{pw}"'),
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        f"super.users=User:{admin}",
        f"log.dirs={cfg.kafka_data}",
        "num.partitions=6",
        "default.replication.factor=1",
        "min.insync.replicas=1",
        "offsets.topic.replication.factor=1",
        # Fewer internal partitions than the default 50 each: a fresh broker starts faster.
        "offsets.topic.num.partitions=6",
        "transaction.state.log.num.partitions=6",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "delete.topic.enable=true",
    ]
    return "\n".join(lines) + "\n"


LOG4J_PROPERTIES = """\
# Written by scripts/stack.py: the broker logs to stdout, which goes to logs/kafka.log.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""


def java_major(version_output: str) -> int | None:
    """Major version from `java -version` output ('1.8.0_x' is 8, '17.0.15' is 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    first = int(match.group(1))
    if first == 1 and match.group(2):
        return int(match.group(2))
    return first


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME", "").strip()
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not os.access(candidate, os.X_OK):
        raise StackError(f"Java {MIN_JAVA}+ is needed for Kafka but `java` was not found")
    try:
        out = subprocess.run(
            [candidate, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"could not run {candidate} -version: {exc}") from None
    major = java_major(out.stderr + out.stdout)
    if major is None:
        raise StackError(f"could not read the Java version from `{candidate} -version`")
    if major < MIN_JAVA:
        raise StackError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, found Java {major} ({candidate})"
        )
    return candidate


def jars_ready(cfg: Config) -> bool:
    return (cfg.jars_dir / ".complete").is_file()


def fetch_jars(cfg: Config) -> None:
    """Copy the broker's runtime classpath into the state folder with Maven (first run only)."""
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven (`mvn`) is needed once to fetch the Kafka jars but was not found")
    progress(
        f"kafka: fetching Kafka {KAFKA_VERSION} jars from Maven Central (first run, ~1 min)..."
    )
    tmp = cfg.kafka_dir / f"jars-{KAFKA_VERSION}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn, "-B", "-q", "-f", str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
        f"-Dkafka.version={KAFKA_VERSION}",
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        raise StackError("Maven did not finish fetching the Kafka jars within 15 minutes") from None
    jars = sorted(tmp.glob("*.jar")) if tmp.is_dir() else []
    if out.returncode != 0 or not any(j.name == f"kafka_2.13-{KAFKA_VERSION}.jar" for j in jars):
        lines = (out.stdout + out.stderr).strip().splitlines()[-15:]
        raise StackError(
            f"Maven failed to download the Kafka {KAFKA_VERSION} jars (exit {out.returncode})",
            lines,
        )
    (tmp / ".complete").write_text(f"{len(jars)} jars\n")
    shutil.rmtree(cfg.jars_dir, ignore_errors=True)
    tmp.replace(cfg.jars_dir)
    progress(f"kafka: {len(jars)} jars cached in {cfg.jars_dir}")


def _kafka_markers(cfg: Config) -> list[str]:
    return ["kafka.Kafka", str(cfg.server_properties)]


def kafka_pid(cfg: Config) -> int | None:
    pid = live_pid_from_file(cfg.kafka_pid_file, _kafka_markers(cfg))
    if pid is None:
        pid = find_process(_kafka_markers(cfg))
        if pid is not None:
            write_pid(cfg.kafka_pid_file, pid)
    return pid


def read_meta_cluster_id(cfg: Config) -> str | None:
    meta = cfg.kafka_data / "meta.properties"
    with contextlib.suppress(OSError):
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    return None


def _run_java_tool(
    java: str,
    cfg: Config,
    args: Sequence[str],
    what: str,
    main: str = "kafka.tools.StorageTool",
    stdin: str | None = None,
) -> str:
    cmd = [java, "-Xmx256m", f"-Dlog4j.configuration=file:{cfg.log4j_properties}"]
    cmd += ["-cp", f"{cfg.jars_dir}/*", main, *args]
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=180, check=False)
    if out.returncode != 0:
        lines = (out.stdout + out.stderr).strip().splitlines()[-15:]
        tool = "storage tool" if main == "kafka.tools.StorageTool" else "admin tool"
        raise StackError(f"kafka {tool} failed to {what} (exit {out.returncode})", lines)
    return out.stdout


def read_scram_users(cfg: Config) -> set[str]:
    with contextlib.suppress(OSError):
        return set(cfg.scram_users_file.read_text().split())
    return set()


def write_scram_users(cfg: Config, users: set[str]) -> None:
    cfg.scram_users_file.write_text("".join(f"{u}\n" for u in sorted(users)))


def check_storage_has_principals(cfg: Config) -> None:
    """Storage formatted before SASL/SCRAM has no admin to add users with: say how to reset."""
    if read_meta_cluster_id(cfg) and KAFKA_ADMIN_USER not in read_scram_users(cfg):
        raise StackError(
            f"the Kafka storage in {cfg.kafka_data} was formatted before the broker had SASL "
            "principals, so the stack's admin cannot be created in it. Reset the broker's data "
            "(its topics and offsets are lost; PostgreSQL keeps its data): "
            f"`python3 scripts/stack.py down && rm -rf {cfg.kafka_data} && "
            "python3 scripts/stack.py up`"
        )


def format_kafka_storage(java: str, cfg: Config, credentials: Mapping[str, str]) -> None:
    if read_meta_cluster_id(cfg):
        return
    cluster_id = cfg.cluster_id_file.read_text().strip() if cfg.cluster_id_file.is_file() else ""
    if not cluster_id:
        out = _run_java_tool(java, cfg, ["random-uuid"], "make a cluster id")
        candidates = [
            ln.strip() for ln in out.splitlines() if re.fullmatch(r"[\w-]{22}", ln.strip())
        ]
        if not candidates:
            raise StackError(f"kafka storage tool printed no cluster id: {out.strip()[:200]!r}")
        cluster_id = candidates[-1]
        cfg.cluster_id_file.write_text(cluster_id + "\n")
    progress(f"kafka: formatting storage in {cfg.kafka_data} (cluster id {cluster_id})")
    args = ["format", "-t", cluster_id, "-c", str(cfg.server_properties), "--ignore-formatted"]
    for user in KAFKA_PRINCIPALS:
        args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={credentials[user]}]"]
    _run_java_tool(
        java,
        cfg,
        args,
        "format the log directory",
    )
    write_scram_users(cfg, set(KAFKA_PRINCIPALS))


def write_admin_properties(cfg: Config, credentials: Mapping[str, str]) -> None:
    """Client settings of the stack's admin (for Kafka's own tools: --command-config)."""
    text = (
        "# Written by scripts/stack.py: the stack's Kafka admin on the SASL listener.\n"
        "security.protocol=SASL_PLAINTEXT\n"
        f"sasl.mechanism={SCRAM_MECHANISM}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{KAFKA_ADMIN_USER}" password="{credentials[KAFKA_ADMIN_USER]}";\n'
    )
    _write_private(cfg.admin_properties, text)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text(text)
    tmp.replace(path)


def kafka_admin(java: str, cfg: Config, commands: Sequence[str], what: str) -> str:
    """Run scripts/kafka/BallastKafkaAdmin.java as the stack's admin over SASL."""
    write_admin_properties(cfg, kafka_credentials(cfg))
    return _run_java_tool(
        java,
        cfg,
        [cfg.sasl_address, str(cfg.admin_properties)],
        what,
        main=str(KAFKA_ADMIN_TOOL),
        stdin="".join(f"{c}\n" for c in commands),
    )


def apply_principals(java: str, cfg: Config) -> None:
    """Add SCRAM users the storage lacks (a principal added since formatting), and the
    observer's ACLs; both are idempotent."""
    credentials = kafka_credentials(cfg)
    have = read_scram_users(cfg)
    missing = [u for u in KAFKA_PRINCIPALS if u not in have]
    commands = [f"scram {u} {credentials[u]}" for u in missing] + list(OBSERVER_ACLS)
    progress("kafka: applying the observer's ACLs" + (f" and users {missing}" if missing else ""))
    kafka_admin(java, cfg, commands, "apply users and ACLs")
    write_scram_users(cfg, have | set(missing))


def prepare_kafka(cfg: Config) -> str:
    java = find_java()
    cfg.kafka_dir.mkdir(parents=True, exist_ok=True)
    if not jars_ready(cfg):
        fetch_jars(cfg)
    credentials = kafka_credentials(cfg)
    check_storage_has_principals(cfg)
    _write_private(
        cfg.server_properties, render_server_properties(cfg, credentials[KAFKA_ADMIN_USER])
    )
    cfg.log4j_properties.write_text(LOG4J_PROPERTIES)
    cfg.kafka_data.mkdir(parents=True, exist_ok=True)
    format_kafka_storage(java, cfg, credentials)
    return java


def spawn_kafka(java: str, cfg: Config) -> subprocess.Popen[bytes]:
    cmd = [
        java,
        f"-Xmx{KAFKA_HEAP}",
        f"-Xms{KAFKA_HEAP}",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{cfg.log4j_properties}",
        f"-Dkafka.logs.dir={cfg.logs_dir}",
        "-cp",
        f"{cfg.jars_dir}/*",
        "kafka.Kafka",
        str(cfg.server_properties),
    ]
    return _spawn_detached(cmd, cfg.kafka_log, cwd=cfg.kafka_dir)


def _spawn_detached(
    cmd: Sequence[str], log: Path, cwd: Path, user: str | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        fh.write(f"\n=== stack.py started {' '.join(cmd[:1])} at {time.ctime()} ===\n".encode())
        fh.flush()
        kwargs: dict[str, object] = {}
        if user is not None:
            kwargs.update(user=user, group=_primary_group(user), extra_groups=[])
        return subprocess.Popen(  # type: ignore[call-overload]
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            start_new_session=True,
            close_fds=True,
            **kwargs,
        )


# --------------------------------------------------------------------------- PostgreSQL


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def _pg_version_of(bindir: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
    return match.group(1) if match else None


def find_pg_bindir() -> Path:
    """BALLAST_PG_BINDIR, else PostgreSQL 15's, else pg_config's, else the newest installed."""
    needed = ("postgres", "initdb", "pg_isready", "psql")

    def usable(d: Path) -> bool:
        return all(os.access(d / tool, os.X_OK) for tool in needed)

    override = os.environ.get("BALLAST_PG_BINDIR", "").strip()
    if override:
        if not usable(Path(override)):
            raise StackError(f"BALLAST_PG_BINDIR={override} lacks one of {', '.join(needed)}")
        return Path(override)
    candidates = [Path(f"/usr/lib/postgresql/{PG_PREFERRED_MAJOR}/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            )
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))

    def major(p: Path) -> int:
        return int(p.parent.name) if p.parent.name.isdigit() else 0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    candidates.append(Path("/usr/local/pgsql/bin"))
    for candidate in candidates:
        if usable(candidate):
            return candidate
    raise StackError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and "
        "`pg_config --bindir`); install postgresql-15 or set BALLAST_PG_BINDIR"
    )


def pg_run_user(cfg: Config) -> str | None:
    """The OS user that runs initdb/postgres: the postgres user when root, else None (us)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(cfg.pg_os_user)
    except KeyError:
        raise StackError(
            f"running as root, PostgreSQL must run as another OS user but '{cfg.pg_os_user}' "
            "does not exist; create it or set BALLAST_PG_OS_USER"
        ) from None
    return cfg.pg_os_user


def _as_user(user: str | None, cmd: Sequence[str]) -> list[str]:
    if user is None:
        return list(cmd)
    runuser = shutil.which("runuser")
    if not runuser:
        raise StackError("running as root needs `runuser` (util-linux) to run PostgreSQL tools")
    return [runuser, "-u", user, "--", *cmd]


def _pg_markers(cfg: Config) -> list[str]:
    return ["-D", str(cfg.pg_data)]


def postgres_pid(cfg: Config) -> int | None:
    pid = live_pid_from_file(cfg.pg_pid_file, _pg_markers(cfg))
    if pid is None:
        # Adopt a postmaster of our data dir whose pid file was lost.
        candidate = read_pid(cfg.pg_data / "postmaster.pid")
        if candidate and pid_alive(candidate) and cmdline_matches(candidate, _pg_markers(cfg)):
            pid = candidate
            write_pid(cfg.pg_pid_file, pid)
    return pid


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def prepare_postgres(cfg: Config, bindir: Path) -> str | None:
    """Make the data and socket dirs and run initdb once. Returns the OS user to run as."""
    user = pg_run_user(cfg)
    cfg.pg_dir.mkdir(parents=True, exist_ok=True)
    cfg.pg_dir.chmod(0o755)
    cfg.pg_socket_dir.mkdir(exist_ok=True)
    _chown(cfg.pg_socket_dir, user)
    version_file = cfg.pg_data / "PG_VERSION"
    major = _pg_version_of(bindir)
    if version_file.is_file():
        have = version_file.read_text().strip()
        if major and have != major:
            raise StackError(
                f"{cfg.pg_data} was made by PostgreSQL {have} but the binaries in {bindir} are "
                f"{major}; set BALLAST_PG_BINDIR or delete that folder (its data is lost)"
            )
        return user
    if cfg.pg_data.exists():
        shutil.rmtree(cfg.pg_data)  # a half-made cluster from an interrupted initdb
    cfg.pg_data.mkdir(mode=0o700)
    _chown(cfg.pg_data, user)
    if user is not None:
        probe = subprocess.run(
            _as_user(user, ["test", "-w", str(cfg.pg_data), "-a", "-x", str(cfg.pg_data)]),
            capture_output=True,
            check=False,
        )
        if probe.returncode != 0:
            raise StackError(
                f"the '{user}' OS user cannot reach {cfg.pg_data}: a parent folder is not "
                "traversable by others; set BALLAST_STATE_DIR to a folder it can reach"
            )
    progress(f"postgres: initdb in {cfg.pg_data} (PostgreSQL {major or '?'})")
    pwfile = cfg.pg_dir / ".initdb-pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    pwfile.chmod(0o600)
    _chown(pwfile, user)
    try:
        cmd = [
            str(bindir / "initdb"),
            "-D", str(cfg.pg_data),
            "-U", PG_USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E", "UTF8",
            "--locale=C",
        ]  # fmt: skip
        if not cfg.pg_fsync:
            cmd.append("--no-sync")
        out = subprocess.run(
            _as_user(user, cmd), capture_output=True, text=True, timeout=300, check=False
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if out.returncode != 0:
        lines = (out.stdout + out.stderr).strip().splitlines()[-15:]
        raise StackError(f"initdb failed (exit {out.returncode})", lines)
    return user


def processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory`` (PostgreSQL's all chdir there)."""
    found = []
    target = str(directory.resolve())
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cwd = os.readlink(f"/proc/{entry}/cwd")
                except OSError:
                    continue
                if cwd == target and pid_alive(int(entry)):
                    found.append(int(entry))
    return found


def _pid_exists(pid: int) -> bool:
    """kill(pid, 0) succeeds: alive or a zombie not yet reaped (PostgreSQL's own test)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_dead_postmaster(cfg: Config, wait_s: float = 10.0) -> None:
    """After a crash, let the old processes go, then drop lock files naming a dead postmaster.

    PostgreSQL removes a lock file whose pid is gone by itself, but refuses while that pid
    still exists (e.g. an unreaped zombie, or a reused pid). Lock files are removed only when
    no live process works in the data directory, so an orphaned backend is never raced.
    """
    lock_files = [cfg.pg_data / "postmaster.pid", *cfg.pg_socket_dir.glob(".s.PGSQL.*.lock")]
    pids = {f: read_pid(f) for f in lock_files if f.exists()}
    if not pids:
        return
    deadline = time.monotonic() + wait_s
    while True:
        orphans = processes_in(cfg.pg_data)
        zombies = [p for p in pids.values() if p and _pid_exists(p) and not pid_alive(p)]
        if not orphans and not zombies:
            break
        if time.monotonic() > deadline:
            if orphans:
                shown = ", ".join(map(str, orphans))
                raise StackError(
                    f"PostgreSQL processes not started by this stack still use {cfg.pg_data} "
                    f"(pids {shown}); stop them first"
                )
            break
        time.sleep(0.1)
    for lock_file, pid in pids.items():
        if pid is None or _pid_exists(pid):
            lock_file.unlink(missing_ok=True)


def postgres_args(cfg: Config, bindir: Path) -> list[str]:
    settings = {
        "listen_addresses": HOST,
        "port": str(cfg.pg_port),
        "unix_socket_directories": str(cfg.pg_socket_dir),
        "max_connections": str(PG_MAX_CONNECTIONS),
        "password_encryption": "scram-sha-256",
        # Sized for a book, not PostgreSQL's defaults (128MB of buffers, a checkpoint per GB of
        # WAL): with those, backends wrote their own dirty pages and checkpoints were forced
        # 39 times to 6 timed over a day of benchmark runs, each writing pages again in full.
        "shared_buffers": cfg.pg_shared_buffers,
        "effective_cache_size": "8GB",
        "maintenance_work_mem": "256MB",
        "max_wal_size": "8GB",
        "checkpoint_timeout": "15min",
        "wal_compression": "lz4",
    }
    if not cfg.pg_fsync:
        settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
    if (bindir.parent / "lib" / "pg_stat_statements.so").exists():
        # what `make bench-scale` reports as the database's costliest statements
        settings["shared_preload_libraries"] = "pg_stat_statements"
    cmd = [str(bindir / "postgres"), "-D", str(cfg.pg_data)]
    for key, value in settings.items():
        cmd += ["-c", f"{key}={value}"]
    return cmd


def pg_ready(cfg: Config, bindir: Path) -> bool:
    out = subprocess.run(
        [str(bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(cfg.pg_port), "-t", "3"],
        capture_output=True,
        check=False,
    )
    return out.returncode == 0


def psql(cfg: Config, bindir: Path, sql: str, database: str = "postgres") -> str:
    env = dict(os.environ, PGPASSWORD=PG_PASSWORD, PGCONNECT_TIMEOUT="10")
    cmd = [
        str(bindir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
        "-h", HOST, "-p", str(cfg.pg_port), "-U", PG_USER, "-d", database, "-c", sql,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    if out.returncode != 0:
        raise StackError(f"psql failed: {out.stderr.strip().splitlines()[-1:] or out.returncode}")
    return out.stdout


DB_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")
PROTECTED_DBS = {"postgres", "template0", "template1"}


def check_db_name(name: str) -> str:
    if not DB_NAME_RE.fullmatch(name):
        raise StackError(
            f"invalid database name {name!r}: use 1-63 letters, digits, _ or -, "
            "starting with a letter or _"
        )
    return name


def create_database(cfg: Config, bindir: Path, name: str) -> bool:
    """Create ``name`` unless it exists. True if it was created now."""
    check_db_name(name)
    literal = name.replace("'", "''")
    if psql(cfg, bindir, f"SELECT 1 FROM pg_database WHERE datname = '{literal}'").strip():
        return False
    try:
        psql(cfg, bindir, f'CREATE DATABASE "{name}"')
    except StackError as exc:
        if "already exists" in exc.message:  # a concurrent createdb won the race
            return False
        raise
    return True


def drop_database(cfg: Config, bindir: Path, name: str) -> bool:
    """Drop ``name`` if it exists, disconnecting its sessions. True if it existed."""
    check_db_name(name)
    if name in PROTECTED_DBS:
        raise StackError(f"refusing to drop the system database {name!r}")
    literal = name.replace("'", "''")
    if not psql(cfg, bindir, f"SELECT 1 FROM pg_database WHERE datname = '{literal}'").strip():
        return False
    psql(cfg, bindir, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return True


# --------------------------------------------------------------------------- commands


@contextlib.contextmanager
def stack_lock(cfg: Config) -> Iterator[None]:
    """Serialise up/down/createdb/dropdb of concurrent invocations on one state folder."""
    cfg.state.mkdir(parents=True, exist_ok=True)
    with (cfg.state / ".stack.lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("stack: waiting for another stack.py run on this state folder...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _line(name: str, *fields: str) -> str:
    return f"{name:<9} " + "  ".join(fields)


def _wait_until(
    what: str,
    ready: Callable[[], bool],
    alive: Callable[[], int | None],
    deadline: float,
    log: Path,
    timeout: float,
) -> None:
    while True:
        if ready():
            return
        code = alive()
        if code is not None:
            raise StackError(
                f"{what} exited during start-up (exit code {code}); see {log}",
                tail(log, 15),
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{what} did not become ready within {timeout:g}s (BALLAST_STACK_TIMEOUT); "
                f"see {log} "
                "(it may still be starting: `stack.py status`, or `stack.py down`)",
                tail(log, 15),
            )
        time.sleep(0.25)


def _exit_code(proc: subprocess.Popen[bytes] | None, pid: int) -> Callable[[], int | None]:
    def check() -> int | None:
        if proc is not None:
            return proc.poll()
        return None if pid_alive(pid) else -1

    return check


def cmd_up(cfg: Config) -> int:
    for d in (cfg.state, cfg.logs_dir):
        d.mkdir(parents=True, exist_ok=True)
    with stack_lock(cfg):
        cfg.logs_dir.chmod(0o755)
        pg_bin = find_pg_bindir()
        k_pid, p_pid = kafka_pid(cfg), postgres_pid(cfg)
        # Preflight everything before starting anything.
        if k_pid is None:
            ensure_port_free(cfg.kafka_port, "kafka", "BALLAST_KAFKA_PORT")
            ensure_port_free(
                cfg.controller_port, "kafka controller", "BALLAST_KAFKA_CONTROLLER_PORT"
            )
            ensure_port_free(cfg.sasl_port, "kafka SASL", "BALLAST_KAFKA_SASL_PORT")
            find_java()
            if not jars_ready(cfg) and not shutil.which("mvn"):
                raise StackError(
                    "Maven (`mvn`) is needed once to fetch the Kafka jars but was not found"
                )
        if p_pid is None:
            ensure_port_free(cfg.pg_port, "postgres", "BALLAST_PG_PORT")

        pg_proc = kafka_proc = None
        # Slow and fallible first-run steps (Maven, formatting) come before any start.
        java = prepare_kafka(cfg) if k_pid is None else None
        if p_pid is None:
            user = prepare_postgres(cfg, pg_bin)
            clear_dead_postmaster(cfg)
            progress(f"postgres: starting on {cfg.pg_address}")
            pg_proc = _spawn_detached(postgres_args(cfg, pg_bin), cfg.pg_log, cfg.pg_data, user)
            p_pid = pg_proc.pid
            write_pid(cfg.pg_pid_file, p_pid)
        if java is not None:
            progress(f"kafka: starting on {cfg.kafka_address} and {cfg.sasl_address} (SASL)")
            kafka_proc = spawn_kafka(java, cfg)
            k_pid = kafka_proc.pid
            write_pid(cfg.kafka_pid_file, k_pid)
        assert k_pid is not None and p_pid is not None

        deadline = time.monotonic() + cfg.timeout
        _wait_until(
            "postgres",
            lambda: pg_ready(cfg, pg_bin),
            _exit_code(pg_proc, p_pid),
            deadline,
            cfg.pg_log,
            cfg.timeout,
        )
        if create_database(cfg, pg_bin, PG_DATABASE):
            progress(f"postgres: created database {PG_DATABASE}")
        if kafka_proc is not None:
            progress("kafka: waiting for the broker to answer ApiVersions and Metadata...")
        _wait_until(
            "kafka",
            lambda: kafka_ready(cfg)[0],
            _exit_code(kafka_proc, k_pid),
            deadline,
            cfg.kafka_log,
            cfg.timeout,
        )
        if java is not None:
            apply_principals(java, cfg)
        elif legacy_kafka(cfg):
            progress(LEGACY_WARNING.format(pid=k_pid, sasl=cfg.sasl_address, data=cfg.kafka_data))
        print(_line("kafka", f"pid {k_pid}", cfg.kafka_address, _verb(kafka_proc)))
        print(_line("postgres", f"pid {p_pid}", cfg.pg_address, _verb(pg_proc)))
    return 0


def _verb(proc: object) -> str:
    return "started" if proc is not None else "already running"


def cmd_down(cfg: Config) -> int:
    if not cfg.state.exists():
        print(_line("kafka", "not running"))
        print(_line("postgres", "not running"))
        return 0
    with stack_lock(cfg):
        plans = [
            ("kafka", kafka_pid(cfg), cfg.kafka_pid_file, [(signal.SIGTERM, STOP_TIMEOUT_S)]),
            (
                "postgres",
                postgres_pid(cfg),
                cfg.pg_pid_file,
                [(signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGQUIT, 5.0)],
            ),
        ]
        for name, pid, pid_file, steps in plans:
            if pid is None:
                print(_line(name, "not running"))
                continue
            progress(f"{name}: stopping pid {pid}...")
            how = stop_pid(pid, [*steps, (signal.SIGKILL, 5.0)])
            pid_file.unlink(missing_ok=True)
            print(_line(name, f"pid {pid}", how))
    return 0


def cmd_status(cfg: Config) -> int:
    ok = True
    k_pid = kafka_pid(cfg) if cfg.state.exists() else None
    k_ready, why = kafka_ready(cfg) if k_pid else (False, "not running")
    p_pid = postgres_pid(cfg) if cfg.state.exists() else None
    p_ready = False
    if p_pid:
        try:
            p_ready = pg_ready(cfg, find_pg_bindir())
        except StackError:
            p_ready = False
    for name, pid, ready, address in (
        ("kafka", k_pid, k_ready, cfg.kafka_address),
        ("postgres", p_pid, p_ready, cfg.pg_address),
    ):
        state = "running" if pid else "stopped"
        print(
            _line(
                name,
                f"{state:<7}",
                f"pid {pid or '-':<7}",
                address,
                f"ready {'yes' if ready else 'no'}",
            )
        )
        ok = ok and bool(pid) and ready
    if k_pid and not k_ready:
        progress(f"kafka: not ready: {why}")
    return 0 if ok else 1


def _require_postgres(cfg: Config) -> Path:
    bindir = find_pg_bindir()
    if not (cfg.state.exists() and postgres_pid(cfg)) or not pg_ready(cfg, bindir):
        raise StackError("postgres is not running or not ready; run `python3 scripts/stack.py up`")
    return bindir


def cmd_createdb(cfg: Config, name: str) -> int:
    check_db_name(name)
    with stack_lock(cfg):
        bindir = _require_postgres(cfg)
        created = create_database(cfg, bindir, name)
    print(_line("postgres", f"database {name}", "created" if created else "already exists"))
    return 0


def cmd_dropdb(cfg: Config, name: str) -> int:
    check_db_name(name)
    if name in PROTECTED_DBS:
        raise StackError(f"refusing to drop the system database {name!r}")
    with stack_lock(cfg):
        bindir = _require_postgres(cfg)
        dropped = drop_database(cfg, bindir, name)
    print(_line("postgres", f"database {name}", "dropped" if dropped else "did not exist"))
    return 0


def parse_acl_lines(text: str) -> list[str]:
    """ACL lines as `python -m ballast_common.kafka_acls` prints them; an error names a bad one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    for number, line in enumerate(lines, 1):
        if not ACL_LINE_RE.fullmatch(line):
            raise StackError(
                f"ACL line {number} is not `ALLOW|DENY User:NAME TOPIC|GROUP LITERAL|PREFIXED "
                f"RESOURCE OPERATION`: {line[:120]!r}"
            )
    return lines


def cmd_acls(cfg: Config, text: str) -> int:
    lines = parse_acl_lines(text)
    if not (cfg.state.exists() and kafka_pid(cfg)) or not kafka_ready(cfg)[0]:
        raise StackError("kafka is not running or not ready; run `python3 scripts/stack.py up`")
    if legacy_kafka(cfg):
        raise StackError(
            "the running Kafka has no principals (no SASL listener): restart it as `up` says"
        )
    if lines:
        kafka_admin(find_java(), cfg, lines, "create ACLs")
    print(_line("kafka", f"{len(lines)} ACLs applied"))
    return 0


def cmd_logs(cfg: Config, component: str, lines: int) -> int:
    log = cfg.kafka_log if component == "kafka" else cfg.pg_log
    if not log.exists():
        raise StackError(f"no log yet at {log}")
    for line in tail(log, lines):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack",
        description="Local Kafka (KRaft) broker and PostgreSQL cluster for Ballast, no docker.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start (or reuse) both and wait until ready")
    sub.add_parser("down", help="stop both (by pid); idempotent")
    sub.add_parser("status", help="exit 0 only if both are running and ready")
    sub.add_parser("env", help="print the connection settings as shell export lines")
    for name, text in (
        ("createdb", "create a database if missing"),
        ("dropdb", "drop a database if present"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("name")
    sub.add_parser(
        "acls",
        help="apply Kafka ACL lines read from stdin (python -m ballast_common.kafka_acls)",
    )
    logs = sub.add_parser("logs", help="print the tail of a component's log")
    logs.add_argument("component", choices=["kafka", "postgres"])
    logs.add_argument("-n", "--lines", type=int, default=50)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config()
        if args.command == "up":
            return cmd_up(cfg)
        if args.command == "down":
            return cmd_down(cfg)
        if args.command == "status":
            return cmd_status(cfg)
        if args.command == "env":
            with stack_lock(cfg):  # the first run makes the credentials: one writer only
                print("\n".join(env_exports(cfg)))
            return 0
        if args.command == "createdb":
            return cmd_createdb(cfg, args.name)
        if args.command == "dropdb":
            return cmd_dropdb(cfg, args.name)
        if args.command == "logs":
            return cmd_logs(cfg, args.component, args.lines)
        if args.command == "acls":
            return cmd_acls(cfg, sys.stdin.read())
        raise StackError(f"unknown command {args.command}")
    except StackError as exc:
        sys.stdout.flush()
        for line in exc.context:
            print(f"  | {line}", file=sys.stderr)
        print(f"stack: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(
            f"stack: {' '.join(map(str, exc.cmd))[:120]} timed out after {exc.timeout}s",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("stack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
