"""The Kafka ACLs generated from the contract registry, and the client settings that use them."""

from __future__ import annotations

import importlib.util
import itertools
import json
import shlex
import ssl
import sys
from pathlib import Path

import pytest
from ballast_common.bus import KafkaConnection, KafkaSettingsError
from ballast_common.contracts.registry import TOPICS
from ballast_common.kafka_acls import (
    SERVICE_PRINCIPALS,
    AclBinding,
    acls_for,
    consumed_topics,
    kafka_acls_script,
    main,
    produced_topics,
)
from ballast_common.settings import ServiceSettings
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[3]
REAL_TOPICS = [t for t in TOPICS.values() if t.name != "dead-letter"]
MUTATING = {"WRITE", "CREATE", "DELETE", "ALTER", "ALTER_CONFIGS", "ALL"}


def _script(name: str):
    spec = importlib.util.spec_from_file_location(
        f"ballast_{name}_for_acls", ROOT / "scripts" / f"{name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _stack_script():
    spec = importlib.util.spec_from_file_location(
        "ballast_stack_for_acls", ROOT / "scripts/stack.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _allowed(acls: list[AclBinding], operation: str, topic: str) -> set[str]:
    return {
        a.principal
        for a in acls
        if a.permission == "ALLOW"
        and a.resource_type == "TOPIC"
        and a.pattern_type == "LITERAL"
        and a.resource in (topic, "*")
        and a.operation == operation
    }


@pytest.mark.parametrize("prefix", ["", "t1234abcd.", "t1234abcd.sys."])
def test_every_produced_topic_is_written_by_exactly_its_producer(prefix: str) -> None:
    acls = acls_for(prefix)
    for topic in REAL_TOPICS:
        assert _allowed(acls, "WRITE", prefix + topic.name) == {f"User:{topic.producer}"}, topic


@pytest.mark.parametrize("prefix", ["", "t1234abcd."])
def test_every_consumer_reads_its_topics_and_no_one_else_does(prefix: str) -> None:
    acls = acls_for(prefix)
    for topic in REAL_TOPICS:
        readers = _allowed(acls, "READ", prefix + topic.name) - {"User:ANONYMOUS"}
        assert readers == {f"User:{c}" for c in topic.consumers}, topic


def test_each_consumer_writes_only_its_own_dead_letters() -> None:
    acls = acls_for("p.")
    for service in SERVICE_PRINCIPALS:
        topic = f"p.dlq.{service}"
        expected = {f"User:{service}"} if consumed_topics(service) else set()
        assert _allowed(acls, "WRITE", topic) == expected


def test_a_service_writes_nothing_but_what_the_registry_says_it_produces() -> None:
    for service in SERVICE_PRINCIPALS:
        written = {
            a.resource
            for a in acls_for("")
            if a.principal == f"User:{service}" and a.operation == "WRITE"
        }
        assert written == set(produced_topics(service))
    assert produced_topics("reporting-svc") == ["dlq.reporting-svc"]
    assert "fills-received" in produced_topics("custodian-gateway")
    assert produced_topics("custodian-sim") == [] and consumed_topics("custodian-sim") == []


def test_consumer_groups_are_the_services_own_prefix() -> None:
    groups = {
        (a.principal, a.pattern_type, a.resource, a.operation)
        for a in acls_for("x.")
        if a.resource_type == "GROUP" and a.permission == "ALLOW"
    }
    assert ("User:rebalance-svc", "PREFIXED", "x.rebalance-svc", "READ") in groups
    assert ("User:ANONYMOUS", "LITERAL", "*", "READ") in groups
    services = {g[0] for g in groups} - {"User:ANONYMOUS"}
    assert services == {f"User:{s}" for s in SERVICE_PRINCIPALS if consumed_topics(s)}


def test_the_anonymous_observer_reads_everything_and_changes_nothing() -> None:
    acls = acls_for("x.")
    anonymous = [a for a in acls if a.principal == "User:ANONYMOUS"]
    allowed = {
        (a.resource_type, a.resource, a.operation) for a in anonymous if a.permission == "ALLOW"
    }
    assert allowed == {("TOPIC", "*", "READ"), ("TOPIC", "*", "DESCRIBE"), ("GROUP", "*", "READ")}
    assert not [a for a in anonymous if a.permission == "ALLOW" and a.operation in MUTATING]
    denied = {a.resource for a in anonymous if a.permission == "DENY"}
    assert denied == {f"x.{s}" for s in SERVICE_PRINCIPALS if consumed_topics(s)}
    assert all(
        a.resource_type == "GROUP" and a.pattern_type == "PREFIXED"
        for a in anonymous
        if a.permission == "DENY"
    )


def test_the_stack_knows_the_same_principals_and_takes_the_printed_lines(capsys) -> None:
    stack = _stack_script()
    assert stack.SERVICE_PRINCIPALS == SERVICE_PRINCIPALS
    assert set(stack.OBSERVER_ACLS) <= {a.line() for a in acls_for("")}
    assert main(["--prefix", "t9."]) == 0
    printed = capsys.readouterr().out
    lines = stack.parse_acl_lines(printed)
    assert lines == [a.line() for a in acls_for("t9.")]
    with pytest.raises(stack.StackError, match="ACL line 1"):
        stack.parse_acl_lines("ALLOW User:x TOPIC LITERAL t WRITE; rm -rf /\n")


def test_plaintext_is_the_default_and_has_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "USERNAME", "PASSWORD"):
        monkeypatch.delenv(f"BALLAST_KAFKA_{name}", raising=False)
    options = KafkaConnection.of("127.0.0.1:19092").client_options()
    assert options == {"bootstrap_servers": "127.0.0.1:19092", "security_protocol": "PLAINTEXT"}
    assert KafkaConnection.from_settings(ServiceSettings()).client_options()[
        "security_protocol"
    ] == ("PLAINTEXT")


def test_sasl_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALLAST_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("BALLAST_KAFKA_USERNAME", "taxlot-svc")
    monkeypatch.setenv("BALLAST_KAFKA_PASSWORD", "s3cret")
    monkeypatch.setenv("BALLAST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19094")
    settings = ServiceSettings()
    assert "s3cret" not in repr(settings)
    connection = KafkaConnection.from_settings(settings)
    assert "s3cret" not in repr(connection)
    assert connection.client_options() == {
        "bootstrap_servers": "127.0.0.1:19094",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "taxlot-svc",
        "sasl_plain_password": "s3cret",
    }


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"security_protocol": "SSL_ISH"}, "kafka_security_protocol='SSL_ISH' must be one of"),
        ({"security_protocol": "SASL_PLAINTEXT"}, "needs kafka_username and kafka_password"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI", "username": "a"},
            "kafka_sasl_mechanism='GSSAPI' must be one of",
        ),
    ],
)
def test_bad_kafka_settings_are_named(kwargs: dict, needle: str) -> None:
    with pytest.raises(KafkaSettingsError, match=needle):
        KafkaConnection("127.0.0.1:19094", **kwargs)


def test_services_are_launched_as_themselves_never_as_the_admin(
    tmp_path: Path, monkeypatch
) -> None:
    services = _script("services")
    monkeypatch.setattr(services, "STATE", tmp_path)
    stack_env = {
        "BALLAST_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "BALLAST_KAFKA_USERNAME": "admin",
        "BALLAST_KAFKA_PASSWORD": "admin-secret",
    }
    assert services.kafka_uses_sasl(stack_env)
    assert services.kafka_credentials() == {}  # no stack credentials here
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "credentials.json").write_text(
        '{"admin": "admin-secret", "taxlot-svc": "t-secret"}'
    )
    credentials = services.kafka_credentials()
    by_name = {s.name: s for s in services.SERVICES}
    taxlot = services.service_env(by_name["taxlot-svc"], stack_env, credentials)
    assert (taxlot["BALLAST_KAFKA_USERNAME"], taxlot["BALLAST_KAFKA_PASSWORD"]) == (
        "taxlot-svc",
        "t-secret",
    )
    unknown = services.service_env(by_name["reporting-svc"], stack_env, credentials)
    assert "BALLAST_KAFKA_PASSWORD" not in unknown and "BALLAST_KAFKA_USERNAME" not in unknown
    # no protocol in the env (the demo's): the stack's broker decides, SASL is filled in
    assert not services.kafka_uses_sasl({})
    (tmp_path / "kafka" / "scram-users").write_text("admin\ntaxlot-svc\n")
    assert services.kafka_uses_sasl({})
    bare = services.service_env(by_name["taxlot-svc"], {}, credentials)
    assert bare["BALLAST_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert not services.kafka_uses_sasl({"BALLAST_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"})
    assert services.service_env(by_name["taxlot-svc"], {}, None) == {}


def test_the_kafka_acls_script_adds_every_binding_with_kafkas_own_tool() -> None:
    acls = acls_for("p.")
    script = kafka_acls_script(
        acls, "kafka:9094", "/tmp/admin.properties", "/opt/kafka/bin/kafka-acls.sh"
    )
    calls = [shlex.split(line) for line in script.splitlines() if line.startswith("/opt/")]
    added = set()
    for call in calls:
        assert call[:5] == [
            "/opt/kafka/bin/kafka-acls.sh",
            "--bootstrap-server",
            "kafka:9094",
            "--command-config",
            "/tmp/admin.properties",
        ]
        permission = "ALLOW" if "--allow-principal" in call else "DENY"
        principal = call[call.index(f"--{permission.lower()}-principal") + 1]
        operation = call[call.index("--operation") + 1].upper()
        pattern = call[call.index("--resource-pattern-type") + 1].upper()
        for flag, value in itertools.pairwise(call):
            if flag in ("--topic", "--group"):
                added.add(
                    AclBinding(principal, flag[2:].upper(), pattern, value, operation, permission)
                )
    assert added == set(acls)
    assert len(calls) < len(acls) / 3, "one call per principal, operation and resource kind"


def test_sasl_ssl_verifies_the_broker_with_the_system_cas() -> None:
    connection = KafkaConnection("kafka:9093", "SASL_SSL", "SCRAM-SHA-512", "a", SecretStr("b"))
    context = connection.client_options()["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_services_connect_to_postgres_as_their_own_role_never_as_the_owner(
    tmp_path: Path, monkeypatch
) -> None:
    services = _script("services")
    monkeypatch.setattr(services, "STATE", tmp_path)
    owner = "postgresql://ballast:owner-secret@127.0.0.1:15432/ballast_x"
    roles = services.database_roles()
    assert roles == services.database_roles()  # made once, then kept
    assert json.loads((tmp_path / "postgres" / "app-roles.json").read_text()) == roles
    databases = services.database_env({"BALLAST_DATABASE_URL": owner}, roles)
    assert databases["BALLAST_DATABASE_OWNER_URL"] == owner
    by_name = {s.name: s for s in services.SERVICES}
    taxlot = databases["TAXLOT_SVC_DATABASE_URL"]
    password = roles["ballast_taxlot_svc"]
    assert taxlot == f"postgresql://ballast_taxlot_svc:{password}@127.0.0.1:15432/ballast_x"
    env = {"BALLAST_DATABASE_URL": owner, "BALLAST_TOPIC_PREFIX": "p."}
    for service in services.SERVICES:
        own = services.service_env(service, env, None, databases)
        assert "owner-secret" not in json.dumps(own), service.name
        assert own["BALLAST_TOPIC_PREFIX"] == "p."
        if service.has_database:
            role = services.database_role(service)
            assert own["BALLAST_DATABASE_URL"].startswith(f"postgresql://{role}:")
    assert "BALLAST_DATABASE_URL" not in services.service_env(
        by_name["custodian-sim"], env, None, databases
    )
