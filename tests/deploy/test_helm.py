"""The helm chart, linted and rendered with helm-python-sdk (Helm's Go SDK, no binary, no
cluster) and every rendered manifest validated against Kubernetes' schemas, offline."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART_DIR, PLATFORM_SERVICES, SERVICES

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk (root dev dependency) is not installed"
)
kv = pytest.importorskip(
    "kubernetes_validate.utils", reason="kubernetes-validate (root dev dependency) not installed"
)

RELEASE = "ballast"
KUBE_VERSIONS = ["1.29.0", "1.33.0", kv.latest_version()]
WARNING = 2


def render(values: dict[str, Any] | None = None, release: str = RELEASE) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART_DIR)) as chart:
        manifests = chart.render(values, name=release, namespace="ballast", is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def assert_valid_kubernetes(docs: list[dict[str, Any]]) -> None:
    for version in KUBE_VERSIONS:
        for doc in docs:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                where = "/".join(map(str, exc.path))
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} invalid for k8s {version}: "
                    f"{where}: {exc.message}"
                )


def test_lint_is_clean() -> None:
    report = helm.lint(str(CHART_DIR), strict=True)
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert serious == [], serious


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    chart = Path(shutil.copytree(CHART_DIR, tmp_path / "ballast"))
    services = chart / "templates" / "services.yaml"
    services.write_text(services.read_text().replace("{{- end }}\n{{- end }}", "{{- end }}"))
    report = helm.lint(str(chart), strict=True)
    assert report["errors"], "lint passed a template with an unclosed range"


def test_one_template_renders_every_service() -> None:
    templates = list((CHART_DIR / "templates").glob("*.yaml"))
    with_deployment = [t.name for t in templates if "kind: Deployment" in t.read_text()]
    with_service = [t.name for t in templates if "kind: Service\n" in t.read_text()]
    assert with_deployment == with_service == ["services.yaml"]


def test_default_render_has_every_service_with_probes_and_resources() -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    assert set(deployments) == set(services) == {f"{RELEASE}-{n}" for n in SERVICES}
    [configmap] = by_kind(docs, "ConfigMap").values()
    [secret] = by_kind(docs, "Secret").values()

    for name, (app, port, _) in SERVICES.items():
        dep = deployments[f"{RELEASE}-{name}"]
        c = container(dep)
        assert c["command"] == ["uvicorn", app, "--host", "0.0.0.0", "--port", str(port)]
        assert c["image"] == "ballast:0.1.0"
        assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        svc = services[f"{RELEASE}-{name}"]
        assert svc["spec"]["selector"] == selector
        assert svc["spec"]["ports"][0]["port"] == port

    for name in PLATFORM_SERVICES:
        c = container(deployments[f"{RELEASE}-{name}"])
        assert c["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
        ref = env_of(c)["BALLAST_DATABASE_URL"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    sim = container(deployments[f"{RELEASE}-custodian-sim"])
    assert "envFrom" not in sim and "BALLAST_DATABASE_URL" not in env_of(sim)

    assert configmap["data"]["BALLAST_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert {"BALLAST_OTLP_ENDPOINT", "BALLAST_LOG_LEVEL"} <= set(configmap["data"])
    assert secret["stringData"]["database-url"].startswith("postgresql+asyncpg://")

    gateway = container(deployments[f"{RELEASE}-custodian-gateway"])
    sim_url = f"http://{RELEASE}-custodian-sim:{SERVICES['custodian-sim'][1]}"
    assert env_of(gateway)["CUSTODIAN_GATEWAY_CUSTODIAN_URL"] == sim_url

    assert_valid_kubernetes(docs)


def test_overrides_image_env_resources_secret_and_disabling() -> None:
    values = {
        "image": {"repository": "registry.example/ballast", "tag": "1.2.3"},
        "database": {"existingSecret": "pg-credentials", "existingSecretKey": "url"},
        "kafka": {"bootstrapServers": "broker-0.kafka:9092,broker-1.kafka:9092"},
        "telemetry": {"otlpEndpoint": "http://otel:4318"},
        "sharedEnv": {"BALLAST_TOPIC_PARTITIONS": 12},
        "services": {
            "custodian-sim": {"enabled": False},
            "custodian-gateway": {
                "env": {"CUSTODIAN_GATEWAY_CUSTODIAN_URL": "https://cust.example"}
            },
            "taxlot-svc": {"replicas": 3, "resources": {"limits": {"memory": "2Gi"}}},
            # false and 0 must win over the defaults too
            "reporting-svc": {"replicas": 0, "readinessProbe": {"initialDelaySeconds": 0}},
            "model-hub-svc": {"platformEnv": False},
        },
    }
    docs = render(values, release="prod")
    deployments = by_kind(docs, "Deployment")
    assert "prod-custodian-sim" not in deployments
    assert "prod-custodian-sim" not in by_kind(docs, "Service")
    assert len(deployments) == len(SERVICES) - 1
    assert by_kind(docs, "Secret") == {}, "existingSecret given: the chart must not make one"

    for name, dep in deployments.items():
        c = container(dep)
        assert c["image"] == "registry.example/ballast:1.2.3"
        if name == "prod-model-hub-svc":
            assert "envFrom" not in c and "env" not in c
            continue
        ref = env_of(c)["BALLAST_DATABASE_URL"]["secretKeyRef"]
        assert ref == {"name": "pg-credentials", "key": "url"}

    reporting = deployments["prod-reporting-svc"]
    assert reporting["spec"]["replicas"] == 0
    probe = container(reporting)["readinessProbe"]
    assert probe["initialDelaySeconds"] == 0 and probe["periodSeconds"] == 5

    taxlot = deployments["prod-taxlot-svc"]
    assert taxlot["spec"]["replicas"] == 3
    resources = container(taxlot)["resources"]
    assert resources["limits"]["memory"] == "2Gi"
    assert resources["requests"]["cpu"] == "100m", "defaults still apply under an override"
    gateway_env = env_of(container(deployments["prod-custodian-gateway"]))
    assert gateway_env["CUSTODIAN_GATEWAY_CUSTODIAN_URL"] == "https://cust.example"

    [configmap] = by_kind(docs, "ConfigMap").values()
    assert configmap["data"]["BALLAST_KAFKA_BOOTSTRAP_SERVERS"].startswith("broker-0.kafka")
    assert configmap["data"]["BALLAST_OTLP_ENDPOINT"] == "http://otel:4318"
    assert configmap["data"]["BALLAST_TOPIC_PARTITIONS"] == "12"

    assert_valid_kubernetes(docs)


def test_config_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any] | None) -> str:
        dep = by_kind(render(values), "Deployment")[f"{RELEASE}-account-svc"]
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum(None) != checksum({"logLevel": "DEBUG"})


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"services": {"account-svc": {"port": "8001"}}}, "/services/account-svc/port"),
        ({"services": {"new-svc": {"port": 9000}}}, "/services/new-svc"),
        ({"services": {"Bad_Name": {"app": "x.main:app", "port": 1}}}, "Bad_Name"),
        ({"services": {"account-svc": {"app": "not a module"}}}, "/services/account-svc/app"),
        ({"logLevel": "LOUD"}, "/logLevel"),
        ({"defaults": {"readinessProbe": {"path": "readyz"}}}, "/defaults/readinessProbe/path"),
    ],
)
def test_bad_values_are_refused_naming_the_key(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        render(values)
    assert where in str(info.value)


def test_kubernetes_validate_is_live() -> None:
    dep = by_kind(render(), "Deployment")[f"{RELEASE}-account-svc"]
    container(dep)["ports"][0]["containerPort"] = "http"
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, KUBE_VERSIONS[-1], strict=True)


def test_chart_and_compose_agree(compose: dict[str, Any]) -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for name, spec in values["services"].items():
        command = compose["services"][name]["command"]
        assert command[1] == spec["app"], name
        assert command[-1] == str(spec["port"]), name
    assert set(values["services"]) == set(SERVICES)
