"""The Kubernetes manifests, rendered as an operator would (`kubectl kustomize` of each overlay) and
checked offline: against the Kubernetes API schemas (kubernetes-validate, strict: an unknown field
is an error, as with `kubectl apply --validate=strict`), KEDA's ScaledObject schema, and against
the code: every setting it reads is provided, every command, port and probe is real."""

from __future__ import annotations

import base64
import functools
import json
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft202012Validator
from typer.main import get_command

from service.app import create_app
from service.cli import app as cli
from service.kafka.topics import CLEVER_EVENTS
from service.paths import project_root
from service.settings import Settings

OVERLAYS = ("dev", "prod")
# The oldest Kubernetes the manifests are written for (policy/v1 PDBs, autoscaling/v2 HPAs,
# seccompProfile and startupProbe are older than it) and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())

# Settings the manifests leave to the code's default on purpose (documented in k8s/README.md).
DEFAULTED = {
    "ROSTER_LOCAL_KAFKA_PORT": "the port of `roster dev`'s own broker: not used in a cluster",
}
# Settings of the poller (issue 15) that the manifests already give, before the code that reads
# them is merged: they may name settings `Settings` does not have yet, and `poll` may not be a
# command yet. Nothing else may.
WORKER_PORT_SETTING = {
    "consume": "ROSTER_CONSUMER_METRICS_PORT",
    "relay": "ROSTER_RELAY_METRICS_PORT",
    "poll": "ROSTER_POLLER_METRICS_PORT",
}


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize k8s/overlays/<overlay>`: what `kubectl apply -k` would send."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with its built-in kustomize) is needed to render k8s/ and is missing")
    done = subprocess.run(
        [kubectl, "kustomize", str(project_root() / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def of_kind(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in render(overlay) if doc["kind"] == kind]


def named(overlay: str, kind: str, name: str) -> dict[str, Any]:
    (doc,) = [doc for doc in of_kind(overlay, kind) if doc["metadata"]["name"] == name]
    return doc


def workloads(overlay: str) -> list[dict[str, Any]]:
    return of_kind(overlay, "Deployment") + of_kind(overlay, "Job")


def config(overlay: str) -> dict[str, str]:
    (config_map,) = of_kind(overlay, "ConfigMap")
    data: dict[str, str] = config_map["data"]
    return data


def secret_keys(container: dict[str, Any]) -> set[str]:
    return {
        env["valueFrom"]["secretKeyRef"]["key"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }


def setting_names() -> set[str]:
    return {f"ROSTER_{name.upper()}" for name in Settings.model_fields}


@functools.cache
def scaled_object_schema() -> dict[str, Any]:
    """KEDA's ScaledObject schema (keda.sh/v1alpha1), vendored in k8s/schemas/ (its "$comment"
    says where it comes from). Made strict the way the API server's strict field validation
    treats a custom resource: a field the schema does not name is an error."""
    path = project_root() / "k8s" / "schemas" / "keda-scaledobject-v1alpha1.json"
    schema: dict[str, Any] = json.loads(path.read_text())

    def strict(node: object) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                strict(value)
        elif isinstance(node, list):
            for value in node:
                strict(value)

    # metadata is Kubernetes' ObjectMeta: the Kubernetes schemas check it on every other kind.
    schema["properties"]["metadata"] = {"type": "object"}
    strict(schema)
    return schema


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_validates_against_its_schema(overlay: str) -> None:
    kinds = set()
    for doc in render(overlay):
        kinds.add(doc["kind"])
        if doc["apiVersion"] == "keda.sh/v1alpha1":
            errors = list(Draft202012Validator(scaled_object_schema()).iter_errors(doc))
            assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = doc["metadata"]["name"]
                pytest.fail(f"{doc['kind']} {name} ({version}): {list(exc.path)}: {exc.message}")
    assert kinds >= {
        "Deployment",
        "Job",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "NetworkPolicy",
    }


def test_the_validators_catch_a_bad_manifest() -> None:
    """The checks above can fail: a misspelt field is refused by either schema."""
    deployment = named("prod", "Deployment", "roster-api")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
    scaled = named("prod", "ScaledObject", "roster-consume")
    validator = Draft202012Validator(scaled_object_schema())
    assert validator.is_valid(scaled)
    assert not validator.is_valid({**scaled, "spec": {**scaled["spec"], "maxReplicas": 3}})
    assert not validator.is_valid({**scaled, "spec": {**scaled["spec"], "maxReplicaCount": "3"}})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_the_code_reads_is_provided(overlay: str) -> None:
    provided = set(config(overlay))
    for workload in workloads(overlay):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            provided |= secret_keys(container)
    missing = setting_names() - provided - set(DEFAULTED)
    assert not missing, f"settings neither in the ConfigMap nor the Secret: {sorted(missing)}"
    unknown = provided - setting_names()
    assert not unknown, f"settings the code does not read: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_values_are_valid_settings(overlay: str) -> None:
    values = {key.removeprefix("ROSTER_").lower(): value for key, value in config(overlay).items()}
    settings = Settings.model_validate(
        {name: value for name, value in values.items() if name in Settings.model_fields}
    )
    assert settings.http_host == "0.0.0.0"  # noqa: S104 (a pod listens on its own address)
    assert settings.http_workers == 1  # a pod is scaled by replicas


def test_the_dev_secret_holds_valid_settings() -> None:
    (secret,) = of_kind("dev", "Secret")
    values = {
        key.removeprefix("ROSTER_").lower(): base64.b64decode(value).decode()
        for key, value in secret["data"].items()
    }
    settings = Settings.model_validate(values)
    assert settings.webhook_secrets and settings.admin_token and settings.database_url
    # Every key a container needs (not marked optional) is in it.
    refs = [
        env["valueFrom"]["secretKeyRef"]
        for workload in workloads("dev")
        for container in workload["spec"]["template"]["spec"]["containers"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    ]
    assert all(ref["name"] == secret["metadata"]["name"] for ref in refs)
    needed = {ref["key"] for ref in refs if not ref.get("optional", False)}
    assert needed and needed <= set(secret["data"]), needed - set(secret["data"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_a_real_command_with_its_ports_and_probes(overlay: str) -> None:
    commands = set(get_command(cli).commands)  # type: ignore[attr-defined]
    values = config(overlay)
    paths = set(create_app(Settings(admin_token="x" * 16)).openapi()["paths"])
    seen = set()
    for workload in workloads(overlay):
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"]:
            command = container["args"][0]
            assert command in commands, command
            seen.add(command)
            ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
            if command == "api":
                assert ports == {"http": int(values["ROSTER_HTTP_PORT"])}
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert {"/healthz", "/readyz"} <= paths
                assert secret_keys(container) == {
                    "ROSTER_DATABASE_URL",
                    "ROSTER_WEBHOOK_SECRETS",
                    "ROSTER_ADMIN_TOKEN",
                }
            elif command in WORKER_PORT_SETTING:
                assert ports == {"metrics": int(values[WORKER_PORT_SETTING[command]])}
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
            assert "ROSTER_DATABASE_URL" in secret_keys(container)
            assert container["envFrom"] == [{"configMapRef": {"name": config_name(overlay)}}]
    assert seen == {"api", "consume", "relay", "poll", "migrate"}


def config_name(overlay: str) -> str:
    (config_map,) = of_kind(overlay, "ConfigMap")
    name: str = config_map["metadata"]["name"]
    assert name.startswith("roster-sync-config-")  # generated: a change rolls the pods
    return name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down(overlay: str) -> None:
    for workload in workloads(overlay):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
        assert pod["automountServiceAccountToken"] is False
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            # The one writable place, where the code writes (tempfile): /tmp.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] in tmp_volumes  # noqa: S108
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"])
            assert "memory" in resources["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_the_drain(overlay: str) -> None:
    values = config(overlay)
    publish = float(values["ROSTER_PUBLISH_TIMEOUT_SECONDS"])
    for deployment in of_kind(overlay, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        grace = pod["terminationGracePeriodSeconds"]
        if container["args"] == ["api"]:
            pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
            # preStop, then uvicorn's graceful shutdown (timeout_graceful_shutdown=10 in
            # service/cli.py) for requests each bounded by the publish timeout.
            assert grace > pre_stop + max(10, publish)
        else:
            assert grace >= 60, deployment["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_consumers_scale_on_lag_up_to_the_partitions(overlay: str) -> None:
    scaled = named(overlay, "ScaledObject", "roster-consume")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "roster-consume"
    named(overlay, "Deployment", "roster-consume")
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= CLEVER_EVENTS.partitions
    (trigger,) = spec["triggers"]
    values = config(overlay)
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == CLEVER_EVENTS.name
    assert trigger["metadata"]["consumerGroup"] == values["ROSTER_CONSUMER_GROUP"]
    assert trigger["metadata"]["bootstrapServers"] == values["ROSTER_KAFKA_BOOTSTRAP_SERVERS"]
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    # The replica count belongs to KEDA's and the API's autoscalers, not to each apply.
    assert "replicas" not in named(overlay, "Deployment", "roster-consume")["spec"]
    assert "replicas" not in named(overlay, "Deployment", "roster-api")["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_scales_on_cpu(overlay: str) -> None:
    hpa = named(overlay, "HorizontalPodAutoscaler", "roster-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "roster-api",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_select_the_pods(overlay: str) -> None:
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in of_kind(overlay, "Deployment")
    }

    def selected(selector: dict[str, str]) -> set[str]:
        return {name for name, labels in pods.items() if selector.items() <= labels.items()}

    for pdb in of_kind(overlay, "PodDisruptionBudget"):
        assert selected(pdb["spec"]["selector"]["matchLabels"]) == {pdb["metadata"]["name"]}
    assert set(pods) == {pdb["metadata"]["name"] for pdb in of_kind(overlay, "PodDisruptionBudget")}
    service = named(overlay, "Service", "roster-api")
    assert selected(service["spec"]["selector"]) == {"roster-api"}
    policies = of_kind(overlay, "NetworkPolicy")
    deny = [p for p in policies if "ingress" not in p["spec"] and "egress" not in p["spec"]]
    assert deny and all(
        selected(p["spec"]["podSelector"]["matchLabels"]) == set(pods) for p in deny
    )
    assert {"Ingress", "Egress"} <= {t for p in deny for t in p["spec"]["policyTypes"]}
