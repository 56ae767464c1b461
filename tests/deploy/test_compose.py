"""docker-compose.yml, checked offline: the compose-spec schema plus the rules we keep."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from ballast_common.auth import AUDIENCE, LOCAL_ISSUER, local_keys_folder
from ballast_common.settings import ServiceSettings

from .conftest import (
    COMPOSE_FILE,
    PLATFORM_SERVICES,
    REPO,
    SERVICES,
    database_role,
    import_apps,
    interpolate,
    module_source,
    required_variables,
)

# What an operator exports before `up` (the header): a URL-safe value for every required variable.
REQUIRED_ENV = {
    name: f"x{name.lower().replace('_', '')}"
    for name in required_variables(COMPOSE_FILE.read_text())
}


def _compose_schema() -> dict[str, Any]:
    try:
        vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.skip("check-jsonschema (root dev dependency) is not installed: no compose-spec")
    return dict(json.loads(vendor.joinpath("compose-spec.json").read_text()))


def _schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = _compose_schema()
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


def _depends_on(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = svc.get("depends_on", {})
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return dict(deps)


def _env(svc: dict[str, Any]) -> dict[str, str]:
    """The service's environment as compose gives it, the header's variables exported."""
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: interpolate(str(v), REQUIRED_ENV) for k, v in env.items()}


def _host_ports(svc: dict[str, Any]) -> list[str]:
    out = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):
            if "published" in port:
                out.append(str(port["published"]))
        else:
            parts = str(port).split("/")[0].split(":")
            if len(parts) >= 2:
                out.append(parts[-2])
    return out


def _healthcheck_text(svc: dict[str, Any]) -> str:
    test = svc["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


# -- the schema ---------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    assert _schema_errors(compose) == []


def test_check_jsonschema_cli_agrees() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "No module named check_jsonschema" in result.stderr:
        pytest.skip("check-jsonschema (root dev dependency) is not installed")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["services"]["kafka"]["healthcheck"].update(intervall="5s"), "healthcheck"),
        (
            lambda d: d["services"]["account-svc"].update(depends_on={"kafka": {"cond": 1}}),
            "depends",
        ),
        (lambda d: d["services"]["postgres"].update(ports={"5432": "5432"}), "ports"),
        (lambda d: d["services"]["postgres"].update(restart=["always"]), "restart"),
        (
            lambda d: d["services"]["rebalance-svc"]["depends_on"]["migrate"].update(
                condition="service_completed"
            ),
            "condition",
        ),
        (lambda d: d["services"]["rebalance-svc-extra"].update(deploy={"replica": 2}), "deploy"),
    ],
)
def test_schema_check_catches_mistakes(compose: dict[str, Any], mutate: Any, where: str) -> None:
    broken = copy.deepcopy(compose)
    mutate(broken)
    errors = _schema_errors(broken)
    assert errors, f"a broken {where} passed the compose-spec schema"


# -- our rules ----------------------------------------------------------------------------------


def _one_shot(svc: dict[str, Any]) -> bool:
    """A job that runs to completion (restart "no"), as opposed to a long-running service."""
    return str(svc.get("restart", "no")) == "no"


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if _one_shot(svc):
            continue
        hc = svc.get("healthcheck")
        assert hc, f"{name} has no healthcheck"
        assert not hc.get("disable"), f"{name} disables its healthcheck"
        assert hc.get("test") and hc["test"] != ["NONE"], f"{name} healthcheck has no test"


def test_depends_on_targets_exist_and_are_healthy_and_acyclic(compose: dict[str, Any]) -> None:
    services = compose["services"]
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = _depends_on(svc)
        graph[name] = set(deps)
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown service {target}"
            if _one_shot(services[target]):
                assert spec.get("condition") == "service_completed_successfully", (
                    f"{name} -> {target} (a one-shot job) must wait for "
                    f"condition: service_completed_successfully"
                )
                continue
            assert spec.get("condition") == "service_healthy", (
                f"{name} -> {target} must wait for condition: service_healthy"
            )
            assert "healthcheck" in services[target], f"{target} has no healthcheck to wait on"
            if "profiles" in services[target]:
                assert "profiles" in svc, (
                    f"{name} (always on) depends on {target}, which only runs under "
                    f"profiles {services[target]['profiles']}"
                )
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"depends_on has a cycle: {exc.args[1]}")


def test_published_host_ports_are_unique(compose: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for name, svc in compose["services"].items():
        for port in _host_ports(svc):
            assert port not in seen, f"host port {port} used by {seen[port]} and {name}"
            seen[port] = name


@pytest.mark.parametrize("name", list(SERVICES))
def test_service_runs_its_app_on_its_port_from_the_one_image(
    compose: dict[str, Any], name: str
) -> None:
    app, port, _ = SERVICES[name]
    svc = compose["services"].get(name)
    assert svc is not None, f"docker-compose.yml has no service {name}"
    assert svc["command"] == ["uvicorn", app, "--host", "0.0.0.0", "--port", str(port)]
    assert f"{port}:{port}" in svc.get("ports", []), f"{name} does not publish {port}"
    build = svc["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == "deploy/Dockerfile"
    assert (REPO / build["dockerfile"]).is_file()
    images = {interpolate(s["image"]) for s in compose["services"].values() if "build" in s}
    assert images == {interpolate(svc["image"])}, "all services must share one image"
    check = _healthcheck_text(svc)
    assert f"127.0.0.1:{port}/readyz" in check, f"{name} healthcheck must probe /readyz"
    assert "curl" not in check, "python:3.11-slim has no curl"
    assert check.startswith("CMD python"), "probe with the image's python"


@pytest.mark.parametrize("name", PLATFORM_SERVICES)
def test_platform_env_points_at_the_compose_infrastructure(
    compose: dict[str, Any], name: str
) -> None:
    services = compose["services"]
    env = _env(services[name])
    for key in (
        "BALLAST_DATABASE_URL",
        "BALLAST_KAFKA_BOOTSTRAP_SERVERS",
        "BALLAST_OTLP_ENDPOINT",
        "BALLAST_LOG_LEVEL",
    ):
        assert key in env, f"{name} lacks {key}"

    db = urlsplit(env["BALLAST_DATABASE_URL"])
    pg_env = _env(services["postgres"])
    assert db.scheme == "postgresql+asyncpg"
    assert (db.hostname, db.port) == ("postgres", 5432)
    # its own role (`migrate` creates it), never the owner
    assert db.username == database_role(name) != pg_env["POSTGRES_USER"]
    assert db.password == REQUIRED_ENV[_database_password_var(name)]
    assert db.path.lstrip("/") == pg_env["POSTGRES_DB"]

    kafka_env = _env(services["kafka"])
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    for server in env["BALLAST_KAFKA_BOOTSTRAP_SERVERS"].split(","):
        assert any(adv.endswith(f"://{server}") for adv in advertised), (
            f"{name}: Kafka does not advertise {server} ({advertised})"
        )
    # Kafka through kafka-setup: the broker is healthy and the service's principal exists.
    assert _depends_on(services[name])["kafka-setup"] == {
        "condition": "service_completed_successfully"
    }
    assert _depends_on(services["kafka-setup"])["kafka"] == {"condition": "service_healthy"}
    assert set(_depends_on(services[name])) >= {"postgres", "kafka-setup"}


def test_gateway_talks_to_the_simulator(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["custodian-gateway"]
    url = urlsplit(_env(gateway)["CUSTODIAN_GATEWAY_CUSTODIAN_URL"])
    assert (url.hostname, url.port) == ("custodian-sim", SERVICES["custodian-sim"][1])
    assert "custodian-sim" in _depends_on(gateway)


# -- bearer tokens ------------------------------------------------------------------------------

TOKEN_SERVICES = [*PLATFORM_SERVICES, *(f"{name}-extra" for name in PLATFORM_SERVICES)]


def _bind_mounts(svc: dict[str, Any]) -> list[dict[str, Any]]:
    """The service's bind mounts in long syntax (short ``src:dst[:ro]`` strings converted)."""
    mounts = []
    for volume in svc.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = re.split(r":(?![^{]*\})", volume)  # not inside ${...}
            if source.startswith((".", "/", "$")):
                bind = {"type": "bind", "source": source, "target": target}
                mounts.append({**bind, "read_only": mode == ["ro"]})
        elif volume.get("type") == "bind":
            mounts.append(volume)
    return mounts


def _jwks_mount(svc: dict[str, Any], jwks: str) -> dict[str, Any]:
    mounts = [m for m in _bind_mounts(svc) if m["target"] == jwks]
    assert len(mounts) == 1, f"BALLAST_AUTH_JWKS={jwks} is not one mounted file: {mounts}"
    return mounts[0]


@pytest.fixture
def no_auth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local issuer's keys folder as a fresh shell sees it (no stack env sourced)."""
    for name in ("BALLAST_AUTH_KEYS", "BALLAST_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name", TOKEN_SERVICES)
def test_every_service_checks_tokens_against_the_local_issuer_by_default(
    compose: dict[str, Any], name: str, no_auth_env: None
) -> None:
    svc = compose["services"][name]
    env = _env(svc)
    settings = ServiceSettings.model_fields
    assert env["BALLAST_AUTH_ISSUER"] == LOCAL_ISSUER == settings["auth_issuer"].default
    assert env["BALLAST_AUTH_AUDIENCE"] == AUDIENCE == settings["auth_audience"].default
    mount = _jwks_mount(svc, env["BALLAST_AUTH_JWKS"])
    assert mount["read_only"] is True
    assert mount.get("bind", {}).get("create_host_path") is False, (
        "a missing JWKS must stop `up` naming it, not become an empty directory on the host"
    )
    source = REPO / interpolate(mount["source"])
    assert source.resolve() == (REPO / local_keys_folder() / "jwks.json").resolve(), (
        "the file `ballast auth init` writes"
    )
    for other in _bind_mounts(svc):
        other_source = (REPO / interpolate(other["source"])).resolve()
        assert other_source != source.parent.resolve(), "the signing key must not be mounted"
        assert other_source.name != "signing-key.pem"


@pytest.mark.parametrize("name", TOKEN_SERVICES)
def test_auth_settings_follow_the_keys_folder_and_an_issuer_url(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = compose["services"][name]
    keys = "/srv/ballast/auth-keys"
    monkeypatch.setenv("BALLAST_AUTH_KEYS", keys)
    mount = _jwks_mount(svc, _env(svc)["BALLAST_AUTH_JWKS"])
    assert Path(interpolate(mount["source"], {"BALLAST_AUTH_KEYS": keys})) == (
        local_keys_folder() / "jwks.json"
    ), "the mount must follow BALLAST_AUTH_KEYS as `ballast auth init` does"

    shell = {
        "BALLAST_AUTH_JWKS_URL": "https://idp.example/.well-known/jwks.json",
        "BALLAST_AUTH_ISSUER": "https://idp.example/",
        "BALLAST_AUTH_AUDIENCE": "ballast-prod",
        # what the local stack's env exports: a host path, meaningless in a container
        "BALLAST_AUTH_JWKS": "/home/someone/.state/auth/jwks.json",
    }
    env = {key: interpolate(str(value), shell) for key, value in svc["environment"].items()}
    assert env["BALLAST_AUTH_JWKS"] == shell["BALLAST_AUTH_JWKS_URL"]
    assert env["BALLAST_AUTH_ISSUER"] == shell["BALLAST_AUTH_ISSUER"]
    assert env["BALLAST_AUTH_AUDIENCE"] == shell["BALLAST_AUTH_AUDIENCE"]
    del shell["BALLAST_AUTH_JWKS_URL"]
    env = {key: interpolate(str(value), shell) for key, value in svc["environment"].items()}
    assert env["BALLAST_AUTH_JWKS"] == mount["target"], "the host's path leaked into the container"


def test_the_header_says_to_make_the_keys_before_starting() -> None:
    header = COMPOSE_FILE.read_text().split("\nname:")[0]
    init, up = header.find("ballast auth init"), header.find("docker compose up")
    assert 0 <= init < up, "the header must say `ballast auth init` before `docker compose up`"


def test_kafka_is_single_node_kraft(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.1"
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env), "KRaft mode has no ZooKeeper"
    node = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert voters == [f"{node}@kafka:9093"]
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"]
    listener_names = {
        p.split(":")[0] for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    }
    used = {p.split("://")[0] for p in env["KAFKA_LISTENERS"].split(",")}
    assert used <= listener_names
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", f"{key} must be 1 on a single node"
    assert "kafka-broker-api-versions.sh" in _healthcheck_text(kafka)


def test_postgres_15_with_pg_isready(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert pg["image"] == "postgres:15"
    env = _env(pg)
    assert env["POSTGRES_USER"] == env["POSTGRES_PASSWORD"] == env["POSTGRES_DB"] == "ballast"
    assert "pg_isready" in _healthcheck_text(pg)


def test_jaeger_is_optional_under_the_tracing_profile(compose: dict[str, Any]) -> None:
    jaeger = compose["services"]["jaeger"]
    assert jaeger["profiles"] == ["tracing"]
    assert "4318:4318" in jaeger["ports"]
    assert "jaegertracing/all-in-one" in jaeger["image"]


@pytest.fixture(scope="module")
def workspace_import_errors(compose: dict[str, Any]) -> dict[str, str]:
    """Import every written app of the compose commands once, with the platform's env."""
    apps = [app for app, _, src in SERVICES.values() if module_source(app, src).exists()]
    env = _env(compose["services"]["account-svc"])
    return import_apps(apps, env)


@pytest.mark.parametrize("name", list(SERVICES))
def test_app_in_the_command_is_importable_from_the_workspace(
    compose: dict[str, Any], workspace_import_errors: dict[str, str], name: str
) -> None:
    command = compose["services"][name]["command"]
    apps = [part for part in command if ":" in part and not part.startswith("-")]
    assert apps == [SERVICES[name][0]]
    source = module_source(apps[0], SERVICES[name][2])
    if not source.exists():
        pytest.skip(f"{source.relative_to(REPO)} is not written yet: nothing to import")
    assert apps[0] not in workspace_import_errors, workspace_import_errors[apps[0]]


# -- migrations once, then services that scale -------------------------------------------------

MIGRATE_COMMAND = ["python", "-m", "ballast_common.migrations", "upgrade", "--all"]


def _extra(name: str) -> str:
    return f"{name}-extra"


def test_migrate_runs_once_before_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == MIGRATE_COMMAND
    assert _one_shot(migrate), "migrate must run to completion, not restart"
    assert interpolate(migrate["image"]) == interpolate(services["account-svc"]["image"])
    assert _host_ports(migrate) == [] and "deploy" not in migrate
    assert _depends_on(migrate) == {"postgres": {"condition": "service_healthy"}}
    owner = urlsplit(_env(migrate)["BALLAST_DATABASE_URL"])
    service = urlsplit(_env(services["account-svc"])["BALLAST_DATABASE_URL"])
    assert (owner.hostname, owner.port, owner.path) == (
        service.hostname,
        service.port,
        service.path,
    ), "migrate must migrate the database the services use"
    one_shots = {name for name, svc in services.items() if _one_shot(svc)}
    assert one_shots == {"migrate", "kafka-acl-script", "kafka-setup"}, (
        f"only migrate and the Kafka set-up may be one-shot jobs: {one_shots}"
    )


@pytest.mark.parametrize("name", [*PLATFORM_SERVICES, *map(_extra, PLATFORM_SERVICES)])
def test_services_wait_for_migrate_and_do_not_migrate_themselves(
    compose: dict[str, Any], name: str
) -> None:
    svc = compose["services"][name]
    assert _depends_on(svc).get("migrate") == {"condition": "service_completed_successfully"}
    assert _env(svc)["BALLAST_MIGRATE_ON_START"] == "false"


def test_the_simulator_needs_no_migrations(compose: dict[str, Any]) -> None:
    sim = compose["services"]["custodian-sim"]
    assert "migrate" not in _depends_on(sim)
    assert _extra("custodian-sim") not in compose["services"], "the simulator is one instance"
    assert int(interpolate(str(sim.get("deploy", {}).get("replicas", 1)))) == 1


def test_no_container_name_blocks_scaling(compose: dict[str, Any]) -> None:
    named = [name for name, svc in compose["services"].items() if "container_name" in svc]
    assert named == []


@pytest.mark.parametrize("name", PLATFORM_SERVICES)
def test_each_service_scales_through_an_extra_without_host_ports(
    compose: dict[str, Any], name: str
) -> None:
    services = compose["services"]
    primary, extra = services[name], services[_extra(name)]
    assert _host_ports(extra) == [], f"{_extra(name)} must not publish host ports (it scales)"
    assert f"{SERVICES[name][1]}" in "".join(_host_ports(primary)), "the quick-look port stays"
    for key in ("image", "command", "environment", "depends_on", "healthcheck", "restart"):
        assert extra[key] == primary[key], f"{_extra(name)}.{key} differs from {name}"
    replicas = extra["deploy"]["replicas"]
    variable = name.upper().replace("-", "_") + "_EXTRA_REPLICAS"
    assert replicas == f"${{{variable}:-0}}", "extras: none unless asked for"
    assert interpolate(replicas) == "0"
    assert "deploy" not in primary or primary["deploy"].get("replicas", 1) == 1


def test_migrate_command_covers_exactly_the_platform_services(
    service_specs: dict[str, dict[str, Any]],
) -> None:
    assert sorted(service_specs) == sorted(PLATFORM_SERVICES)


# -- principals on the bus ----------------------------------------------------------------------

KAFKA_SERVICES = PLATFORM_SERVICES


def _password_var(service: str) -> str:
    return f"KAFKA_{service.upper().replace('-', '_')}_PASSWORD"


@pytest.mark.parametrize("name", [*KAFKA_SERVICES, *map(_extra, KAFKA_SERVICES)])
def test_each_service_is_its_own_kafka_principal(compose: dict[str, Any], name: str) -> None:
    service = name.removesuffix("-extra")
    env = compose["services"][name]["environment"]
    assert env["BALLAST_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["BALLAST_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["BALLAST_KAFKA_USERNAME"] == service
    var = _password_var(service)
    # `${VAR:?...}`: compose refuses to start without the password
    assert env["BALLAST_KAFKA_PASSWORD"].startswith(f"${{{var}:?"), env["BALLAST_KAFKA_PASSWORD"]
    setup_env = compose["services"]["kafka-setup"]["environment"]
    assert setup_env[var] == env["BALLAST_KAFKA_PASSWORD"], f"kafka-setup makes {service}'s user"
    assert service in compose["services"]["kafka-setup"]["command"][0]


def test_the_broker_has_acls_and_an_anonymous_read_only_host_port(compose: dict[str, Any]) -> None:
    env = _env(compose["services"]["kafka"])
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == "User:admin"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {p.split("://")[0]: p.split(":")[-1] for p in env["KAFKA_LISTENERS"].split(",")}
    assert protocols["HOST"] == "PLAINTEXT" and listeners["HOST"] == "19092"
    for name in ("SASL_PLAINTEXT", "ADMIN", "HOSTSASL", "CONTROLLER"):
        assert protocols[name] == "SASL_PLAINTEXT", name
    assert "SCRAM-SHA-512" in env["KAFKA_LISTENER_NAME_SASL__PLAINTEXT_SASL_ENABLED_MECHANISMS"]
    assert "ADMIN" not in " ".join(compose["services"]["kafka"]["ports"]), "admin stays inside"


def test_the_acl_script_comes_from_the_registry(compose: dict[str, Any]) -> None:
    script = " ".join(compose["services"]["kafka-acl-script"]["command"])
    assert "python -m ballast_common.kafka_acls --kafka-acls-sh" in script
    assert "--bootstrap kafka:9094" in script
    setup = compose["services"]["kafka-setup"]["command"][0]
    assert "sh /kafka-setup/acls.sh" in setup
    assert "KAFKA_" in setup and "SCRAM-SHA-512=[password=" in setup


# -- a database role per service ----------------------------------------------------------------


def _database_password_var(service: str) -> str:
    return f"DATABASE_{service.upper().replace('-', '_')}_PASSWORD"


def _database_settings(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if "DATABASE" in k}


def _owner_url(compose: dict[str, Any]) -> str:
    pg = _env(compose["services"]["postgres"])
    user, password, db = pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
    return f"postgresql+asyncpg://{user}:{password}@postgres:5432/{db}"


def test_migrate_connects_as_the_owner_with_every_services_role(
    compose: dict[str, Any], service_specs: dict[str, dict[str, Any]]
) -> None:
    services = compose["services"]
    owner = _owner_url(compose)
    expected = {
        "BALLAST_DATABASE_OWNER_URL": owner,
        "BALLAST_DATABASE_URL": owner,
        # the prefix each service's settings read (service_config("TAXLOT_SVC_") ...)
        **{
            f"{spec['env_prefix']}DATABASE_URL": _env(services[name])["BALLAST_DATABASE_URL"]
            for name, spec in service_specs.items()
        },
    }
    assert _database_settings(_env(services["migrate"])) == expected
    roles = {urlsplit(url).username for key, url in expected.items() if "OWNER" not in key}
    assert len(roles) == len(service_specs) + 1, "one role per service, and the owner"


@pytest.mark.parametrize("name", [*PLATFORM_SERVICES, *map(_extra, PLATFORM_SERVICES)])
def test_each_service_gets_only_its_own_role(compose: dict[str, Any], name: str) -> None:
    settings = _database_settings(_env(compose["services"][name]))
    assert set(settings) == {"BALLAST_DATABASE_URL"}, settings
    role = urlsplit(settings["BALLAST_DATABASE_URL"]).username
    assert role == database_role(name.removesuffix("-extra"))


def test_only_migrate_gets_the_owners_url(compose: dict[str, Any]) -> None:
    owner = _owner_url(compose)
    holding = [n for n, svc in compose["services"].items() if owner in _env(svc).values()]
    assert holding == ["migrate"]
    assert not _database_settings(_env(compose["services"]["custodian-sim"]))


@pytest.mark.parametrize("name", PLATFORM_SERVICES)
def test_each_role_password_is_required_and_in_the_header(
    compose: dict[str, Any], name: str
) -> None:
    var = _database_password_var(name)
    raw = compose["services"][name]["environment"]["BALLAST_DATABASE_URL"]
    # `${VAR:?...}`: compose refuses to start without the password
    assert f":${{{var}:?" in raw, raw
    assert interpolate(raw) == raw, "no default password"
    header = COMPOSE_FILE.read_text().split("\nname:")[0]
    assert var in header, f"the header's export loop must list {var}"


def test_the_env_means_to_the_code_what_it_says(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from ballast_common.migrations.runner import app_role_of, database_url, load_spec
    from ballast_common.tenancy import AppRole

    services = compose["services"]
    specs = {name: load_spec(name) for name in PLATFORM_SERVICES}

    def only(env: dict[str, str]) -> None:
        for key in [k for k in os.environ if "DATABASE" in k]:
            monkeypatch.delenv(key)
        for key, value in _database_settings(env).items():
            monkeypatch.setenv(key, value)

    only(_env(services["migrate"]))
    for name, spec in specs.items():
        assert database_url(spec) == _owner_url(compose), f"{name}: migrate as the owner"
        password = REQUIRED_ENV[_database_password_var(name)]
        assert app_role_of(spec) == AppRole(database_role(name), password), name
    for name, spec in specs.items():
        only(_env(services[name]))
        settings = spec.settings_type()
        assert urlsplit(settings.database_url).username == database_role(name), name
        assert settings.database_owner_url == "", name
