"""The helm chart, linted and rendered with helm-python-sdk (Helm's Go SDK, no binary, no
cluster) and every rendered manifest validated against Kubernetes' schemas, offline."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART_DIR, PLATFORM_SERVICES, SERVICES, database_role, interpolate

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk (root dev dependency) is not installed"
)
kv = pytest.importorskip(
    "kubernetes_validate.utils", reason="kubernetes-validate (root dev dependency) not installed"
)

RELEASE = "ballast"
KUBE_VERSIONS = ["1.29.0", "1.33.0", kv.latest_version()]
WARNING = 2


# The chart requires a JWKS (auth.jwksUrl or auth.jwksConfigMap): the renders below give one.
JWKS_URL = "https://idp.example/.well-known/jwks.json"
# ... and a Kafka password per service (kafka.sasl.passwords): the renders below give them.
KAFKA_PASSWORDS = {name: f"pw-{name}" for name in SERVICES}
# ... and a database role per service (database.serviceRoles.urls), as do the renders below.
OWNER_URL = "postgresql+asyncpg://ballast:ballast@postgres:5432/ballast"  # values.yaml
ROLE_URLS = {
    name: f"postgresql+asyncpg://{database_role(name)}:db-{name}@postgres:5432/ballast"
    for name in PLATFORM_SERVICES
}
WITH_JWKS = {
    "auth": {"jwksUrl": JWKS_URL},
    "kafka": {"sasl": {"passwords": KAFKA_PASSWORDS}},
    "database": {"serviceRoles": {"urls": ROLE_URLS}},
}


def with_jwks(values: dict[str, Any] | None) -> dict[str, Any]:
    """``values`` with auth.jwksUrl set to JWKS_URL, unless they name a JWKS themselves, every
    service's Kafka password unless they give Kafka credentials themselves, and every
    service's database role URL unless they give role URLs themselves."""
    out = copy.deepcopy(values or {})
    auth = out.setdefault("auth", {})
    if "jwksUrl" not in auth and "jwksConfigMap" not in auth:
        auth["jwksUrl"] = JWKS_URL
    sasl = out.setdefault("kafka", {}).setdefault("sasl", {})
    if "passwords" not in sasl and "existingSecrets" not in sasl:
        sasl["passwords"] = dict(KAFKA_PASSWORDS)
    roles = out.setdefault("database", {}).setdefault("serviceRoles", {})
    if "urls" not in roles and "existingSecret" not in roles:
        roles["urls"] = dict(ROLE_URLS)
    return out


def render_manifests(
    values: dict[str, Any] | None = None, release: str = RELEASE, *, jwks: bool = True
) -> dict[str, str]:
    with helm.Chart.load(str(CHART_DIR)) as chart:
        manifests: dict[str, str] = chart.render(
            with_jwks(values) if jwks else values,
            name=release,
            namespace="ballast",
            is_install=True,
        )
    return manifests


def render(
    values: dict[str, Any] | None = None, release: str = RELEASE, *, jwks: bool = True
) -> list[dict[str, Any]]:
    manifests = render_manifests(values, release, jwks=jwks)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def platform_secrets(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Secrets but the services' Kafka passwords (<release>-<service>-kafka)."""
    return {k: v for k, v in by_kind(docs, "Secret").items() if not k.endswith("-kafka")}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


container_of_pod = container  # a Job's pod template sits where a Deployment's does


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def is_crd(doc: dict[str, Any]) -> bool:
    """Custom resources (KEDA's) have no schema in kubernetes-validate: checked by structure."""
    return str(doc["apiVersion"]).startswith("keda.sh/")


def hooks(doc: dict[str, Any]) -> set[str]:
    annotation = doc["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    return set(filter(None, annotation.split(",")))


def assert_valid_kubernetes(docs: list[dict[str, Any]]) -> None:
    for version in KUBE_VERSIONS:
        for doc in docs:
            if is_crd(doc):
                continue
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                where = "/".join(map(str, exc.path))
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} invalid for k8s {version}: "
                    f"{where}: {exc.message}"
                )


def test_lint_is_clean() -> None:
    report = helm.lint(str(CHART_DIR), WITH_JWKS, strict=True)
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert serious == [], serious


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    chart = Path(shutil.copytree(CHART_DIR, tmp_path / "ballast"))
    services = chart / "templates" / "services.yaml"
    services.write_text(services.read_text().replace("{{- end }}\n{{- end }}", "{{- end }}"))
    report = helm.lint(str(chart), WITH_JWKS, strict=True)
    assert report["errors"], "lint passed a template with an unclosed range"


def test_one_template_renders_every_service() -> None:
    templates = list((CHART_DIR / "templates").glob("*.yaml"))
    with_deployment = [t.name for t in templates if "\nkind: Deployment\n" in t.read_text()]
    with_service = [t.name for t in templates if "\nkind: Service\n" in t.read_text()]
    assert with_deployment == with_service == ["services.yaml"]


def test_default_render_has_every_service_with_probes_and_resources() -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    assert set(deployments) == set(services) == {f"{RELEASE}-{n}" for n in SERVICES}
    [configmap] = by_kind(docs, "ConfigMap").values()
    [roles_secret] = [d for d in platform_secrets(docs).values() if not hooks(d)]

    for name, (app, port, _) in SERVICES.items():
        dep = deployments[f"{RELEASE}-{name}"]
        c = container(dep)
        assert c["command"] == ["uvicorn", app, "--host", "0.0.0.0", "--port", str(port)]
        assert c["image"] == "ballast:0.1.0"
        assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 60
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
        assert ref == {"name": roles_secret["metadata"]["name"], "key": name}
    assert roles_secret["stringData"] == ROLE_URLS
    sim = container(deployments[f"{RELEASE}-custodian-sim"])
    assert "envFrom" not in sim and "BALLAST_DATABASE_URL" not in env_of(sim)

    assert configmap["data"]["BALLAST_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert {"BALLAST_OTLP_ENDPOINT", "BALLAST_LOG_LEVEL"} <= set(configmap["data"])
    assert configmap["data"]["BALLAST_MIGRATE_ON_START"] == "false", "the Job migrates"

    gateway = container(deployments[f"{RELEASE}-custodian-gateway"])
    sim_url = f"http://{RELEASE}-custodian-sim:{SERVICES['custodian-sim'][1]}"
    assert env_of(gateway)["CUSTODIAN_GATEWAY_CUSTODIAN_URL"] == sim_url

    assert_valid_kubernetes(docs)


def test_overrides_image_env_resources_secret_and_disabling() -> None:
    values = {
        "image": {"repository": "registry.example/ballast", "tag": "1.2.3"},
        # every service as the owner, as before roles (database roles: below)
        "database": {
            "existingSecret": "pg-credentials",
            "existingSecretKey": "url",
            "serviceRoles": {"enabled": False},
        },
        "kafka": {"bootstrapServers": "broker-0.kafka:9092,broker-1.kafka:9092"},
        "telemetry": {"otlpEndpoint": "http://otel:4318"},
        "sharedEnv": {"BALLAST_TOPIC_PARTITIONS": 12},
        "services": {
            "custodian-sim": {"enabled": False},
            "custodian-gateway": {
                "env": {"CUSTODIAN_GATEWAY_CUSTODIAN_URL": "https://cust.example"}
            },
            "taxlot-svc": {
                "replicas": 3,
                "resources": {"limits": {"memory": "2Gi"}},
                "autoscaling": {"enabled": False},
            },
            # false and 0 must win over the defaults too
            "reporting-svc": {
                "replicas": 0,
                "readinessProbe": {"initialDelaySeconds": 0},
                "autoscaling": {"enabled": False},
            },
            "model-hub-svc": {"platformEnv": False},
        },
    }
    docs = render(values, release="prod")
    deployments = by_kind(docs, "Deployment")
    assert "prod-custodian-sim" not in deployments
    assert "prod-custodian-sim" not in by_kind(docs, "Service")
    assert len(deployments) == len(SERVICES) - 1
    assert platform_secrets(docs) == {}, "existingSecret given: the chart must not make one"
    [job] = by_kind(docs, "Job").values()
    job_ref = env_of(container_of_pod(job))["BALLAST_DATABASE_URL"]["secretKeyRef"]
    assert job_ref == {"name": "pg-credentials", "key": "url"}
    assert set(by_kind(docs, "HorizontalPodAutoscaler")) == {
        f"prod-{n}" for n in PLATFORM_SERVICES if n not in ("taxlot-svc", "reporting-svc")
    }

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
    assert checksum(None) != checksum({"auth": {"issuer": "https://idp.example/"}})


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"services": {"account-svc": {"port": "8001"}}}, "/services/account-svc/port"),
        ({"services": {"new-svc": {"port": 9000}}}, "/services/new-svc"),
        ({"services": {"Bad_Name": {"app": "x.main:app", "port": 1}}}, "Bad_Name"),
        ({"services": {"account-svc": {"app": "not a module"}}}, "/services/account-svc/app"),
        ({"logLevel": "LOUD"}, "/logLevel"),
        ({"defaults": {"readinessProbe": {"path": "readyz"}}}, "/defaults/readinessProbe/path"),
        ({"auth": {"jwksUrl": "idp.example/jwks.json"}}, "/auth/jwksUrl"),
        ({"auth": {"jwksConfigMap": "Ballast_JWKS"}}, "/auth/jwksConfigMap"),
        ({"auth": {"issuer": ""}}, "/auth/issuer"),
        ({"auth": {"audience": ""}}, "/auth/audience"),
        ({"auth": {"jwks": "https://idp.example/jwks.json"}}, "/auth"),
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
    compose_env = compose["services"]["account-svc"]["environment"]
    assert values["auth"]["issuer"] == interpolate(compose_env["BALLAST_AUTH_ISSUER"])
    assert values["auth"]["audience"] == interpolate(compose_env["BALLAST_AUTH_AUDIENCE"])


# -- bearer tokens -------------------------------------------------------------------------------

AUTH_SETTINGS = {"BALLAST_AUTH_ISSUER", "BALLAST_AUTH_AUDIENCE", "BALLAST_AUTH_JWKS"}


def pod_env(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, Any]:
    """The container's environment as Kubernetes resolves it: envFrom ConfigMaps, then env."""
    configmaps = by_kind(docs, "ConfigMap")
    c = container(deployment)
    env: dict[str, Any] = {}
    for source in c.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    env.update(env_of(c))
    return env


def configmap_volumes(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v]


def notes(values: dict[str, Any]) -> str:
    manifests = render_manifests(values)
    [text] = [t for path, t in manifests.items() if path.endswith("NOTES.txt")]
    return text


def test_every_service_pod_gets_the_auth_settings() -> None:
    values = {"auth": {"issuer": "https://idp.example/", "audience": "ballast-prod"}}
    docs = render(values)
    deployments = by_kind(docs, "Deployment")
    for name in PLATFORM_SERVICES:
        dep = deployments[f"{RELEASE}-{name}"]
        env = pod_env(docs, dep)
        assert env["BALLAST_AUTH_ISSUER"] == "https://idp.example/", name
        assert env["BALLAST_AUTH_AUDIENCE"] == "ballast-prod", name
        assert env["BALLAST_AUTH_JWKS"] == JWKS_URL, name
        assert configmap_volumes(dep) == [], f"{name}: a JWKS URL needs no mount"
    sim = deployments[f"{RELEASE}-custodian-sim"]
    assert not AUTH_SETTINGS & set(pod_env(docs, sim)), "the simulator checks no tokens"
    assert JWKS_URL in notes(values)
    assert_valid_kubernetes(docs)


def test_default_issuer_and_audience_are_the_services_defaults() -> None:
    from ballast_common.auth import AUDIENCE, LOCAL_ISSUER
    from ballast_common.settings import ServiceSettings

    [configmap] = by_kind(render(), "ConfigMap").values()
    settings = ServiceSettings.model_fields
    assert configmap["data"]["BALLAST_AUTH_ISSUER"] == LOCAL_ISSUER
    assert settings["auth_issuer"].default == LOCAL_ISSUER
    assert configmap["data"]["BALLAST_AUTH_AUDIENCE"] == AUDIENCE
    assert settings["auth_audience"].default == AUDIENCE


@pytest.mark.parametrize(
    "values",
    [
        None,
        {"auth": {"jwksUrl": ""}},
        {"auth": {"jwksUrl": "", "jwksConfigMap": ""}},
        {"auth": {"issuer": "https://idp.example/"}},
    ],
)
def test_rendering_without_a_jwks_fails_naming_it(values: dict[str, Any] | None) -> None:
    with pytest.raises(helm.HelmError) as info:
        render(values, jwks=False)
    message = str(info.value)
    assert "auth.jwksUrl is required" in message and "auth.jwksConfigMap" in message


def test_a_jwks_url_and_a_configmap_together_are_refused() -> None:
    values = {"auth": {"jwksUrl": JWKS_URL, "jwksConfigMap": "ballast-jwks"}}
    with pytest.raises(helm.HelmError) as info:
        render(values)
    assert "auth.jwksUrl and auth.jwksConfigMap are both set" in str(info.value)


def test_jwks_configmap_is_mounted_and_pointed_at() -> None:
    values = {"auth": {"jwksConfigMap": "ballast-jwks"}}
    docs = render(values)
    deployments = by_kind(docs, "Deployment")
    for name in PLATFORM_SERVICES:
        dep = deployments[f"{RELEASE}-{name}"]
        [volume] = configmap_volumes(dep)
        assert volume["configMap"]["name"] == "ballast-jwks", name
        assert volume["configMap"]["items"] == [{"key": "jwks.json", "path": "jwks.json"}]
        [mount] = [m for m in container(dep)["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True, name
        assert "subPath" not in mount, f"{name}: a subPath mount never sees a rotated JWKS"
        env = pod_env(docs, dep)
        assert env["BALLAST_AUTH_JWKS"] == f"{mount['mountPath']}/jwks.json", name
        assert env["BALLAST_AUTH_ISSUER"] and env["BALLAST_AUTH_AUDIENCE"], name
    assert configmap_volumes(deployments[f"{RELEASE}-custodian-sim"]) == []
    assert "ballast-jwks" in notes(values)
    assert_valid_kubernetes(docs)

    without_platform_env = {**values, "services": {"model-hub-svc": {"platformEnv": False}}}
    model_hub = by_kind(render(without_platform_env), "Deployment")[f"{RELEASE}-model-hub-svc"]
    assert configmap_volumes(model_hub) == [], "no shared env: no JWKS mount either"


# -- migrations once, before the services ------------------------------------------------------


def test_migration_job_runs_before_install_and_upgrade(
    service_specs: dict[str, dict[str, Any]],
) -> None:
    from ballast_common.migrations.__main__ import parse_args
    from ballast_common.migrations.runner import SERVICE_PACKAGES, package_of

    docs = render()
    [job] = by_kind(docs, "Job").values()
    hook_secrets = {n: d for n, d in by_kind(docs, "Secret").items() if hooks(d)}
    assert set(hook_secrets) == {f"{RELEASE}-migrate", f"{RELEASE}-migrate-db-roles"}
    hook_secret = hook_secrets[f"{RELEASE}-migrate"]
    weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    for doc in (job, *hook_secrets.values()):
        assert hooks(doc) == {"pre-install", "pre-upgrade"}
        policies = set(doc["metadata"]["annotations"]["helm.sh/hook-delete-policy"].split(","))
        assert policies == {"before-hook-creation", "hook-succeeded"}
        if doc is not job:
            assert int(doc["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight, (
                "the Job's Secrets must exist before the Job"
            )

    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0
    c = container_of_pod(job)
    assert c["image"] == "ballast:0.1.0"
    assert c["command"][:4] == ["python", "-m", "ballast_common.migrations", "upgrade"]
    args = parse_args(c["command"][3:])  # the CLI accepts what the Job runs
    assert sorted(args.services) == sorted(service_specs) == sorted(PLATFORM_SERVICES)
    assert {package_of(n) for n in args.services} == set(SERVICE_PACKAGES)
    ref = env_of(c)["BALLAST_DATABASE_URL"]["secretKeyRef"]
    assert ref == {"name": hook_secret["metadata"]["name"], "key": "database-url"}
    assert hook_secret["stringData"] == {"database-url": OWNER_URL}
    [roles] = [d for d in platform_secrets(docs).values() if not hooks(d)]
    assert hook_secrets[f"{RELEASE}-migrate-db-roles"]["stringData"] == roles["stringData"], (
        "the same roles as the services"
    )
    assert "envFrom" not in c, "hooks run before the chart's ConfigMap exists"
    assert c["resources"]["limits"]["memory"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True

    # Services never migrate while the Job does.
    [configmap] = by_kind(docs, "ConfigMap").values()
    assert configmap["data"]["BALLAST_MIGRATE_ON_START"] == "false"
    assert_valid_kubernetes([job, *hook_secrets.values()])


def test_migration_job_skips_disabled_services_and_takes_shared_env() -> None:
    values = {
        "services": {"reporting-svc": {"enabled": False}},
        "sharedEnv": {"REBALANCE_SVC_DATABASE_URL": "postgresql://x@y/rebalance"},
        "database": {"serviceRoles": {"enabled": False}},
    }
    [job] = by_kind(render(values), "Job").values()
    c = container_of_pod(job)
    assert "reporting-svc" not in c["command"] and "rebalance-svc" in c["command"]
    assert env_of(c)["REBALANCE_SVC_DATABASE_URL"] == "postgresql://x@y/rebalance"


def test_migrations_off_means_services_migrate_themselves() -> None:
    docs = render(
        {"migrations": {"enabled": False}, "database": {"serviceRoles": {"enabled": False}}}
    )
    assert by_kind(docs, "Job") == {}
    assert [d for d in docs if hooks(d)] == []
    [configmap] = by_kind(docs, "ConfigMap").values()
    assert configmap["data"]["BALLAST_MIGRATE_ON_START"] == "true"


# -- replicas, autoscalers, disruption budgets -------------------------------------------------


def test_values_know_every_consumer_group_of_the_code(
    service_specs: dict[str, dict[str, Any]],
) -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    default_lanes = values["defaults"]["lanes"]
    for name, spec in service_specs.items():
        chart = values["services"][name]
        assert chart.get("consumer", values["defaults"]["consumer"]) == spec["consumer"], name
        lanes = set(chart.get("lanes", default_lanes))
        missing = set(spec["lanes"]) - lanes
        assert not missing, f"{name}: lanes {missing} have no KEDA trigger (values lanes)"
    assert values["services"]["custodian-sim"]["consumer"] is False


def test_hpa_per_consumer_service_by_default() -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {f"{RELEASE}-{n}" for n in PLATFORM_SERVICES}
    assert by_kind(docs, "ScaledObject") == {}
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        [metric] = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
        assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
        assert "replicas" not in deployments[name]["spec"], "the HPA owns the replica count"
        assert container(deployments[name])["resources"]["requests"]["cpu"], "HPA needs it"
    sim = deployments[f"{RELEASE}-custodian-sim"]["spec"]
    assert sim["replicas"] == 1 and sim["strategy"] == {"type": "Recreate"}
    assert_valid_kubernetes(docs)


def test_replicas_per_service_without_autoscaling() -> None:
    values = {
        "autoscaling": {"mode": "none"},
        "services": {"rebalance-svc": {"replicas": 4}, "taxlot-svc": {"replicas": 2}},
    }
    docs = render(values)
    replicas = {n: d["spec"]["replicas"] for n, d in by_kind(docs, "Deployment").items()}
    assert replicas == {
        f"{RELEASE}-{n}": {"rebalance-svc": 4, "taxlot-svc": 2}.get(n, 1) for n in SERVICES
    }
    assert by_kind(docs, "HorizontalPodAutoscaler") == by_kind(docs, "ScaledObject") == {}
    assert_valid_kubernetes(docs)


def test_keda_scaled_object_per_consumer_on_group_lag() -> None:
    values = {
        "autoscaling": {"mode": "keda", "keda": {"authenticationRef": "kafka-sasl"}},
        "kafka": {"topicPrefix": "prod.", "bootstrapServers": "b0:9092,b1:9092"},
        "services": {
            "rebalance-svc": {"autoscaling": {"maxReplicas": 12, "lagThreshold": 200}},
            "taxlot-svc": {"autoscaling": {"enabled": False}, "replicas": 2},
        },
    }
    docs = render(values)
    deployments = by_kind(docs, "Deployment")
    scaled = by_kind(docs, "ScaledObject")
    assert by_kind(docs, "HorizontalPodAutoscaler") == {}, "KEDA makes its own HPA"
    consumers = [n for n in PLATFORM_SERVICES if n != "taxlot-svc"]
    assert set(scaled) == {f"{RELEASE}-{n}" for n in consumers}
    assert deployments[f"{RELEASE}-taxlot-svc"]["spec"]["replicas"] == 2

    for name in consumers:
        so = scaled[f"{RELEASE}-{name}"]
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        spec = so["spec"]
        target = spec["scaleTargetRef"]
        assert target["name"] in deployments and target["kind"] == "Deployment"
        assert "replicas" not in deployments[target["name"]]["spec"]
        assert isinstance(spec["minReplicaCount"], int) and spec["minReplicaCount"] >= 1
        assert spec["maxReplicaCount"] == (12 if name == "rebalance-svc" else 6)
        assert spec["pollingInterval"] == 15 and spec["cooldownPeriod"] == 300
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
        lanes = ["chunks"] if name == "rebalance-svc" else []
        groups = [f"prod.{name}", *(f"prod.{name}.{lane}" for lane in lanes)]
        assert [t["metadata"]["consumerGroup"] for t in spec["triggers"]] == groups
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata are strings"
            assert meta["bootstrapServers"] == "b0:9092,b1:9092"
            assert meta["lagThreshold"] == ("200" if name == "rebalance-svc" else "1000")
            assert meta["offsetResetPolicy"] == "earliest"
            assert "topic" not in meta, "lag over every topic the group consumes"
            assert trigger["authenticationRef"] == {"name": "kafka-sasl"}
    assert_valid_kubernetes(docs)


def test_pod_disruption_budget_per_service() -> None:
    docs = render(
        {
            "services": {
                "rebalance-svc": {"podDisruptionBudget": {"minAvailable": 1}},
                "model-hub-svc": {"podDisruptionBudget": {"enabled": False}},
            }
        }
    )
    deployments = by_kind(docs, "Deployment")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == set(deployments) - {f"{RELEASE}-model-hub-svc"}
    for name, pdb in pdbs.items():
        assert pdb["apiVersion"] == "policy/v1"
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selector == deployments[name]["spec"]["selector"]["matchLabels"]
        if name == f"{RELEASE}-rebalance-svc":
            assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
        else:
            assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert_valid_kubernetes(docs)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"autoscaling": {"mode": "magic"}}, "/autoscaling/mode"),
        ({"defaults": {"autoscaling": {"minReplicas": 0}}}, "/defaults/autoscaling/minReplicas"),
        ({"services": {"rebalance-svc": {"lanes": ["Chunks!"]}}}, "/services/rebalance-svc/lanes"),
        ({"migrations": {"enabled": "yes"}}, "/migrations/enabled"),
        (
            {"services": {"taxlot-svc": {"podDisruptionBudget": {"maxUnavailable": "half"}}}},
            "/services/taxlot-svc/podDisruptionBudget/maxUnavailable",
        ),
    ],
)
def test_bad_scaling_values_are_refused_naming_the_key(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        render(values)
    assert where in str(info.value)


def test_min_above_max_replicas_is_refused_naming_the_service() -> None:
    values = {"services": {"taxlot-svc": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}}
    with pytest.raises(helm.HelmError) as info:
        render(values)
    assert "services.taxlot-svc.autoscaling: minReplicas (5) is above maxReplicas (2)" in str(
        info.value
    )


# -- principals on the bus ----------------------------------------------------------------------


def test_every_kafka_service_is_its_own_principal_with_its_own_secret() -> None:
    docs = render()
    deployments, secrets = by_kind(docs, "Deployment"), by_kind(docs, "Secret")
    [configmap] = by_kind(docs, "ConfigMap").values()
    assert configmap["data"]["BALLAST_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert configmap["data"]["BALLAST_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    for name in PLATFORM_SERVICES:
        c = container(deployments[f"{RELEASE}-{name}"])
        env = env_of(c)
        assert env["BALLAST_KAFKA_USERNAME"] == name
        ref = env["BALLAST_KAFKA_PASSWORD"]["secretKeyRef"]
        assert ref == {"name": f"{RELEASE}-{name}-kafka", "key": "kafka-password"}, name
        assert secrets[ref["name"]]["stringData"] == {"kafka-password": f"pw-{name}"}
    sim = container(deployments[f"{RELEASE}-custodian-sim"])
    assert "BALLAST_KAFKA_PASSWORD" not in env_of(sim), "the simulator does not use Kafka"
    assert f"{RELEASE}-custodian-sim-kafka" not in secrets
    assert_valid_kubernetes(docs)


def test_rendering_without_a_services_kafka_password_fails_naming_it() -> None:
    passwords = {k: v for k, v in KAFKA_PASSWORDS.items() if k != "taxlot-svc"}
    with pytest.raises(helm.HelmError) as info:
        render({"kafka": {"sasl": {"passwords": passwords}}})
    message = str(info.value)
    assert "kafka.sasl.passwords.taxlot-svc is required" in message
    assert "kafka.sasl.existingSecrets.taxlot-svc" in message


def test_existing_secrets_are_used_as_they_are() -> None:
    existing = {name: f"vault-{name}" for name in PLATFORM_SERVICES}
    docs = render({"kafka": {"sasl": {"existingSecrets": existing, "passwordKey": "password"}}})
    deployments = by_kind(docs, "Deployment")
    for name in PLATFORM_SERVICES:
        ref = env_of(container(deployments[f"{RELEASE}-{name}"]))["BALLAST_KAFKA_PASSWORD"]
        assert ref["secretKeyRef"] == {"name": f"vault-{name}", "key": "password"}
    assert not [s for s in by_kind(docs, "Secret") if s.endswith("-kafka")]


def test_plaintext_needs_no_kafka_secret() -> None:
    docs = render({"kafka": {"securityProtocol": "PLAINTEXT", "sasl": {"passwords": {}}}})
    for dep in by_kind(docs, "Deployment").values():
        assert "BALLAST_KAFKA_PASSWORD" not in env_of(container(dep))
    assert not [s for s in by_kind(docs, "Secret") if s.endswith("-kafka")]


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"kafka": {"securityProtocol": "SASL"}}, "/kafka/securityProtocol"),
        ({"kafka": {"saslMechanism": "GSSAPI"}}, "/kafka/saslMechanism"),
        ({"kafka": {"sasl": {"passwords": {"account-svc": ""}}}}, "/kafka/sasl/passwords"),
        ({"kafka": {"sasl": {"existingSecrets": {"account-svc": "Bad_Name"}}}}, "/kafka/sasl"),
        ({"kafka": {"password": "x"}}, "/kafka"),
    ],
)
def test_bad_kafka_values_are_refused_naming_the_key(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        render(values)
    assert where in str(info.value)


# -- a database role per service ----------------------------------------------------------------


def resolved_env(docs: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, str]:
    """The container's environment as its pod sees it: ConfigMaps and Secret keys resolved
    from the rendered objects (a Secret the chart does not render resolves to a marker)."""
    configmaps, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
    c = container(workload)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        secret = secrets.get(ref["name"])
        env[item["name"]] = (
            secret["stringData"][ref["key"]] if secret else f"<{ref['name']}/{ref['key']}>"
        )
    return env


def database_settings(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if "DATABASE" in k}


def test_each_service_gets_its_own_role_and_never_the_owners_url() -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    for name in PLATFORM_SERVICES:
        dep = deployments[f"{RELEASE}-{name}"]
        env = resolved_env(docs, dep)
        assert database_settings(env) == {"BALLAST_DATABASE_URL": ROLE_URLS[name]}, name
        assert OWNER_URL not in yaml.safe_dump(dep), name
        referenced = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container(dep)["env"]
            if "valueFrom" in e
        }
        for secret in referenced:
            assert OWNER_URL not in yaml.safe_dump(by_kind(docs, "Secret")[secret]), secret
    sim = resolved_env(docs, deployments[f"{RELEASE}-custodian-sim"])
    assert database_settings(sim) == {}
    # After install the owner's URL is nowhere but in the Job's hook Secret (deleted with it).
    holding = [d["metadata"]["name"] for d in docs if OWNER_URL in yaml.safe_dump(d)]
    assert holding == [f"{RELEASE}-migrate"]
    assert hooks(by_kind(docs, "Secret")[f"{RELEASE}-migrate"])
    assert_valid_kubernetes(docs)


def test_the_job_migrates_as_the_owner_with_every_services_role(
    service_specs: dict[str, dict[str, Any]],
) -> None:
    docs = render()
    [job] = by_kind(docs, "Job").values()
    env = database_settings(resolved_env(docs, job))
    expected = {
        "BALLAST_DATABASE_URL": OWNER_URL,
        "BALLAST_DATABASE_OWNER_URL": OWNER_URL,
        # the prefix each service's settings read (service_config("TAXLOT_SVC_") ...)
        **{f"{spec['env_prefix']}DATABASE_URL": ROLE_URLS[n] for n, spec in service_specs.items()},
    }
    assert env == expected
    assert len(set(ROLE_URLS.values())) == len(service_specs) == 6


def test_the_job_and_the_pods_mean_to_the_code_what_they_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ballast_common.migrations.runner import app_role_of, database_url, load_spec
    from ballast_common.tenancy import AppRole

    docs = render()
    [job] = by_kind(docs, "Job").values()
    deployments = by_kind(docs, "Deployment")
    specs = {name: load_spec(name) for name in PLATFORM_SERVICES}

    def only(env: dict[str, str]) -> None:
        import os

        for key in [k for k in os.environ if "DATABASE" in k]:
            monkeypatch.delenv(key)
        for key, value in database_settings(env).items():
            monkeypatch.setenv(key, value)

    only(resolved_env(docs, job))
    for name, spec in specs.items():
        assert database_url(spec) == OWNER_URL, f"{name}: the Job migrates as the owner"
        assert app_role_of(spec) == AppRole(database_role(name), f"db-{name}"), name
    for name, spec in specs.items():
        only(resolved_env(docs, deployments[f"{RELEASE}-{name}"]))
        settings = spec.settings_type()
        assert settings.database_url == ROLE_URLS[name], name
        assert settings.database_owner_url == "", name


def test_role_urls_from_a_secret_of_yours() -> None:
    values = {
        "database": {
            "existingSecret": "pg-owner",
            "existingSecretKey": "url",
            "serviceRoles": {"existingSecret": "pg-roles"},
        }
    }
    docs = render(values)
    assert platform_secrets(docs) == {}, "both Secrets are yours: the chart makes none"
    for name in PLATFORM_SERVICES:
        c = container(by_kind(docs, "Deployment")[f"{RELEASE}-{name}"])
        ref = env_of(c)["BALLAST_DATABASE_URL"]["secretKeyRef"]
        assert ref == {"name": "pg-roles", "key": name}
    [job] = by_kind(docs, "Job").values()
    env = {
        k: v["secretKeyRef"] for k, v in env_of(container_of_pod(job)).items() if "DATABASE" in k
    }
    owner = {"name": "pg-owner", "key": "url"}
    assert env.pop("BALLAST_DATABASE_URL") == env.pop("BALLAST_DATABASE_OWNER_URL") == owner
    assert env == {
        f"{name.upper().replace('-', '_')}_DATABASE_URL": {"name": "pg-roles", "key": name}
        for name in PLATFORM_SERVICES
    }
    assert_valid_kubernetes(docs)


def test_disabled_services_need_no_role() -> None:
    urls = {k: v for k, v in ROLE_URLS.items() if k != "reporting-svc"}
    values = {
        "services": {"reporting-svc": {"enabled": False}},
        "database": {"serviceRoles": {"urls": urls}},
    }
    docs = render(values)
    for secret in (f"{RELEASE}-db-roles", f"{RELEASE}-migrate-db-roles"):
        assert by_kind(docs, "Secret")[secret]["stringData"] == urls
    [job] = by_kind(docs, "Job").values()
    assert "REPORTING_SVC_DATABASE_URL" not in env_of(container_of_pod(job))


def test_roles_off_is_the_one_owner_url_of_before() -> None:
    docs = render({"database": {"serviceRoles": {"enabled": False}}})
    secrets = by_kind(docs, "Secret")
    assert f"{RELEASE}-db-roles" not in secrets and f"{RELEASE}-migrate-db-roles" not in secrets
    assert secrets[f"{RELEASE}-shared"]["stringData"] == {"database-url": OWNER_URL}
    for name in PLATFORM_SERVICES:
        dep = by_kind(docs, "Deployment")[f"{RELEASE}-{name}"]
        assert database_settings(resolved_env(docs, dep)) == {"BALLAST_DATABASE_URL": OWNER_URL}
        assert "checksum/database-roles" not in dep["spec"]["template"]["metadata"]["annotations"]
    [job] = by_kind(docs, "Job").values()
    assert database_settings(resolved_env(docs, job)) == {"BALLAST_DATABASE_URL": OWNER_URL}


def test_a_changed_role_url_rolls_the_pods() -> None:
    def checksum(urls: dict[str, str]) -> str:
        values = {"database": {"serviceRoles": {"urls": urls}}}
        dep = by_kind(render(values), "Deployment")[f"{RELEASE}-taxlot-svc"]
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/database-roles"])

    changed = {**ROLE_URLS, "taxlot-svc": ROLE_URLS["taxlot-svc"].replace("db-taxlot", "new")}
    assert checksum(ROLE_URLS) != checksum(changed)


def test_notes_name_the_roles_secret() -> None:
    text = notes({})
    assert f"{RELEASE}-db-roles" in text and "role of its own" in text


def test_rendering_without_a_services_role_url_fails_naming_it() -> None:
    urls = {k: v for k, v in ROLE_URLS.items() if k != "taxlot-svc"}
    with pytest.raises(helm.HelmError) as info:
        render({"database": {"serviceRoles": {"urls": urls}}})
    message = str(info.value)
    assert "database.serviceRoles.urls.taxlot-svc is required" in message
    assert "database.serviceRoles.existingSecret" in message


def _role_urls(**changes: str) -> dict[str, str]:
    return {**ROLE_URLS, **{k.replace("_", "-"): v for k, v in changes.items()}}


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        (
            {"migrations": {"enabled": False}},
            "database.serviceRoles.enabled needs migrations.enabled",
        ),
        (
            {"database": {"serviceRoles": {"urls": _role_urls(taxlot_svc=OWNER_URL)}}},
            "database.serviceRoles.urls.taxlot-svc connects as ballast, the schema owner",
        ),
        (
            {
                "database": {
                    "serviceRoles": {"urls": _role_urls(taxlot_svc=ROLE_URLS["account-svc"])}
                }
            },
            "database.serviceRoles.urls.account-svc and database.serviceRoles.urls.taxlot-svc "
            "both connect as ballast_account_svc",
        ),
        (
            {"sharedEnv": {"REBALANCE_SVC_DATABASE_URL": OWNER_URL}},
            "sharedEnv.REBALANCE_SVC_DATABASE_URL: with database.serviceRoles.enabled",
        ),
        (
            {"sharedEnv": {"BALLAST_DATABASE_OWNER_URL": OWNER_URL}},
            "sharedEnv.BALLAST_DATABASE_OWNER_URL: with database.serviceRoles.enabled",
        ),
        (
            {"services": {"taxlot-svc": {"env": {"BALLAST_DATABASE_URL": OWNER_URL}}}},
            "services.taxlot-svc.env.BALLAST_DATABASE_URL: with database.serviceRoles.enabled",
        ),
    ],
)
def test_role_values_that_cannot_work_are_refused(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(helm.HelmError) as info:
        render(values)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"database": {"serviceRoles": {"enabled": "yes"}}}, "/database/serviceRoles/enabled"),
        ({"database": {"serviceRole": {"enabled": True}}}, "/database"),
        ({"database": {"serviceRoles": {"existingSecret": "Pg_Roles"}}}, "/database/serviceRoles"),
        (
            {"database": {"serviceRoles": {"urls": _role_urls(taxlot_svc="postgresql://x")}}},
            "/database/serviceRoles/urls/taxlot-svc",
        ),
        (
            # a role name the migration step refuses (tenancy.AppRole)
            {
                "database": {
                    "serviceRoles": {
                        "urls": _role_urls(taxlot_svc="postgresql://Taxlot-Svc:pw@db:5432/ballast")
                    }
                }
            },
            "/database/serviceRoles/urls/taxlot-svc",
        ),
        (
            # no database: the role would look for one named like itself
            {
                "database": {
                    "serviceRoles": {
                        "urls": _role_urls(taxlot_svc="postgresql://ballast_taxlot_svc:pw@db:5432")
                    }
                }
            },
            "/database/serviceRoles/urls/taxlot-svc",
        ),
    ],
)
def test_bad_role_values_are_refused_naming_the_key(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        render(values)
    assert where in str(info.value)
