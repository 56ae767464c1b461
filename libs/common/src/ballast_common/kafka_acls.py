"""Kafka principals and ACLs, generated from the contract registry (docs/stack.md).

Each service is its own SCRAM principal `User:<service>`: it may Write only the topics it
produces (and its own dead-letter topic `dlq.<service>`), Read the topics it consumes, and use
the consumer groups named `<prefix><service>...`. The anonymous listener is the read-only
observer: it may Describe and Read every topic and use any consumer group but the services'.

    python -m ballast_common.kafka_acls [--prefix PREFIX]   # one binding per line
    python -m ballast_common.kafka_acls --kafka-acls-sh --bootstrap kafka:9094 \
        --command-config admin.properties                  # a script of kafka-acls.sh calls

prints the bindings for a topic prefix in the line format `scripts/stack.py acls` applies, or
as calls of Kafka's own `kafka-acls.sh` (docker-compose.yml's kafka-setup runs those).
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ballast_common.contracts.registry import DEAD_LETTER_TOPIC_PREFIX, TOPICS

ADMIN = "admin"
ANONYMOUS = "ANONYMOUS"
# Every Kafka principal of the system but the admin. The custodian simulator is a principal
# too, with no grant: it speaks HTTP only, so a Kafka client holding its secret gets nothing.
SERVICE_PRINCIPALS = (
    "account-svc",
    "model-hub-svc",
    "rebalance-svc",
    "taxlot-svc",
    "custodian-gateway",
    "reporting-svc",
    "custodian-sim",
)
# Registry entries that are not one topic of their own (dead letters go to dlq.<service>).
_NOT_A_TOPIC = {"dead-letter"}


@dataclass(frozen=True, order=True)
class AclBinding:
    """One Kafka ACL: `permission` `principal` to do `operation` on a resource pattern."""

    principal: str  # "User:taxlot-svc"
    resource_type: str  # TOPIC | GROUP
    pattern_type: str  # LITERAL | PREFIXED
    resource: str
    operation: str  # READ | WRITE | DESCRIBE | CREATE | ALL
    permission: str = "ALLOW"  # ALLOW | DENY

    def line(self) -> str:
        """The binding as one line: `ALLOW User:x TOPIC LITERAL name WRITE`."""
        return " ".join(
            (
                self.permission,
                self.principal,
                self.resource_type,
                self.pattern_type,
                self.resource,
                self.operation,
            )
        )


def produced_topics(service: str) -> list[str]:
    """Logical topics `service` publishes, as the registry says, dead letters included."""
    own = [t.name for t in TOPICS.values() if t.producer == service and t.name not in _NOT_A_TOPIC]
    if consumed_topics(service):
        own.append(DEAD_LETTER_TOPIC_PREFIX + service)
    return sorted(own)


def consumed_topics(service: str) -> list[str]:
    """Logical topics `service` consumes, as the registry says."""
    return sorted(
        t.name for t in TOPICS.values() if service in t.consumers and t.name not in _NOT_A_TOPIC
    )


def service_acls(service: str, prefix: str = "") -> list[AclBinding]:
    """What `User:<service>` may do on the topics and groups of `prefix`."""
    user = f"User:{service}"
    produced, consumed = produced_topics(service), consumed_topics(service)
    acls = [AclBinding(user, "TOPIC", "LITERAL", prefix + t, "WRITE") for t in produced]
    acls += [AclBinding(user, "TOPIC", "LITERAL", prefix + t, "READ") for t in consumed]
    # A service creates the topics it touches at start-up, whichever starts first.
    acls += [
        AclBinding(user, "TOPIC", "LITERAL", prefix + t, op)
        for t in sorted(set(produced) | set(consumed))
        for op in ("CREATE", "DESCRIBE")
    ]
    if consumed:
        acls.append(AclBinding(user, "GROUP", "PREFIXED", prefix + service, "READ"))
    return acls


def observer_acls(prefix: str = "") -> list[AclBinding]:
    """The anonymous observer: reads every topic, never joins a service's consumer group."""
    anonymous = f"User:{ANONYMOUS}"
    acls = [
        AclBinding(anonymous, "TOPIC", "LITERAL", "*", "DESCRIBE"),
        AclBinding(anonymous, "TOPIC", "LITERAL", "*", "READ"),
        AclBinding(anonymous, "GROUP", "LITERAL", "*", "READ"),
    ]
    acls += [
        AclBinding(anonymous, "GROUP", "PREFIXED", prefix + service, "ALL", "DENY")
        for service in SERVICE_PRINCIPALS
        if consumed_topics(service)
    ]
    return acls


def acls_for(prefix: str = "") -> list[AclBinding]:
    """Every ACL of the system for one topic prefix, sorted (tests with a prefix get theirs)."""
    acls = observer_acls(prefix)
    for service in SERVICE_PRINCIPALS:
        acls += service_acls(service, prefix)
    return sorted(set(acls))


def kafka_acls_script(
    acls: Sequence[AclBinding],
    bootstrap: str,
    command_config: str,
    tool: str = "kafka-acls.sh",
) -> str:
    """A shell script adding `acls` with Kafka's kafka-acls.sh, one call per principal,
    permission, operation and resource kind (each call names all of its resources)."""

    def kind(a: AclBinding) -> tuple[str, str, str, str, str]:
        return (a.principal, a.permission, a.operation, a.resource_type, a.pattern_type)

    lines = [
        "#!/bin/sh",
        "# Written by python -m ballast_common.kafka_acls: do not edit.",
        "set -eu",
    ]
    for (principal, permission, operation, rtype, pattern), group in itertools.groupby(
        sorted(acls, key=kind), key=kind
    ):
        args = [tool, "--bootstrap-server", bootstrap, "--command-config", command_config]
        args += ["--add", f"--{permission.lower()}-principal", principal]
        args += ["--operation", operation.capitalize()]
        args += ["--resource-pattern-type", pattern.lower()]
        for binding in group:
            args += [f"--{rtype.lower()}", binding.resource]
        lines.append(" ".join(shlex.quote(a) for a in args))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ballast_common.kafka_acls",
        description="Print the Kafka ACLs of every principal for a topic prefix, one a line.",
    )
    parser.add_argument("--prefix", default="", help="topic and consumer-group prefix")
    parser.add_argument(
        "--kafka-acls-sh", action="store_true", help="print kafka-acls.sh calls instead"
    )
    parser.add_argument("--bootstrap", default="kafka:9094", help="for --kafka-acls-sh")
    parser.add_argument(
        "--command-config", default="/tmp/admin.properties", help="for --kafka-acls-sh"
    )
    parser.add_argument("--tool", default="kafka-acls.sh", help="for --kafka-acls-sh")
    args = parser.parse_args(argv)
    if any(c.isspace() for c in args.prefix):
        parser.error(f"--prefix {args.prefix!r} must not contain whitespace")
    acls = acls_for(args.prefix)
    if args.kafka_acls_sh:
        sys.stdout.write(kafka_acls_script(acls, args.bootstrap, args.command_config, args.tool))
    else:
        sys.stdout.write("".join(binding.line() + "\n" for binding in acls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
