"""Every Kubernetes manifest validates against the Kubernetes OpenAPI schemas (kubernetes-validate,
which bundles them: no network); Strimzi resources are checked for their required fields; the
ConfigMap's config.toml loads; the Alertmanager sample passes amtool."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from l7scope.config import load

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30.0"
STRIMZI_API = "kafka.strimzi.io/v1beta2"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        found += [(f"{path.name}:{d['kind']}/{d['metadata']['name']}", d) for d in documents(path)]
    return found


MANIFESTS = manifests()


def test_the_expected_resources_exist() -> None:
    kinds = {d["kind"] for _, d in MANIFESTS}
    expected = {"DaemonSet", "Deployment", "ConfigMap", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    assert expected | {"Service", "Namespace", "Secret"} <= kinds


@pytest.mark.parametrize(("name", "doc"), MANIFESTS, ids=[n for n, _ in MANIFESTS])
def test_manifest_matches_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    # strict: unknown fields are errors too (a typo such as `hostPid` would otherwise pass).
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_rejected() -> None:
    """The validator really validates: a misspelt field and a wrong type both fail."""
    doc = next(d for _, d in MANIFESTS if d["kind"] == "DaemonSet")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def agent_pod() -> dict[str, Any]:
    return next(d for _, d in MANIFESTS if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]


def test_agent_has_the_host_access_it_needs_and_no_more() -> None:
    pod = agent_pod()
    assert pod["hostPID"] is True
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["privileged"] is False
    # Exactly what docs/platform.md lists; not SYS_RESOURCE (BPF maps are memcg-charged on >= 5.11).
    documented = {"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"}
    assert set(security["capabilities"]["add"]) == documented
    assert security["capabilities"]["drop"] == ["ALL"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for path in ("/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup", "/proc", "/var/cache/l7scope"):
        assert path in host.values(), path
    for name in ("btf", "cgroup", "host-proc"):
        assert mounts[name]["readOnly"] is True
    assert container["resources"]["limits"]["memory"] and container["resources"]["limits"]["cpu"]
    env = {e["name"]: e for e in container["env"]}
    assert env["L7SCOPE_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert any(k.startswith("L7SCOPE_CAPTURE_") for k in env)


def test_configmap_config_loads_with_the_real_loader(tmp_path: Path) -> None:
    cm = next(
        d for _, d in MANIFESTS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "l7scope-config"
    )
    text = cm["data"]["config.toml"]
    tomllib.loads(text)
    ca = tmp_path / "ca.crt"
    ca.write_text("placeholder\n")
    (tmp_path / "config.toml").write_text(text.replace("/etc/l7scope/kafka-ca/ca.crt", str(ca)))
    config = load(tmp_path / "config.toml", {"L7SCOPE_KAFKA_SASL_PLAIN_PASSWORD": "x"})
    assert config.kafka.security_protocol == "SASL_SSL" and config.kafka.partitions == 12


def test_pipeline_replicas_within_partitions() -> None:
    deployment = next(
        d for _, d in MANIFESTS if d["kind"] == "Deployment" and d["metadata"]["name"] == "l7scope-pipeline"
    )
    topics = {
        d["metadata"]["name"]: d
        for d in documents(DEPLOY / "kafka" / "strimzi.yaml")
        if d["kind"] == "KafkaTopic"
    }
    assert deployment["spec"]["replicas"] <= topics["l7scope.fragments"]["spec"]["partitions"]


REQUIRED: dict[str, list[tuple[str, ...]]] = {
    "Kafka": [("spec", "kafka", "listeners"), ("spec", "entityOperator")],
    "KafkaNodePool": [("spec", "replicas"), ("spec", "roles"), ("spec", "storage")],
    "KafkaTopic": [("spec", "partitions"), ("spec", "replicas"), ("spec", "config", "retention.ms")],
    "KafkaUser": [("spec", "authentication", "type")],
}


def test_strimzi_resources_have_their_required_fields() -> None:
    docs = documents(DEPLOY / "kafka" / "strimzi.yaml")
    assert {d["kind"] for d in docs} == set(REQUIRED)
    topics = {d["metadata"]["name"] for d in docs if d["kind"] == "KafkaTopic"}
    assert topics == {"l7scope.fragments", "l7scope.records", "l7scope.alerts"}
    cluster = next(d["metadata"]["name"] for d in docs if d["kind"] == "Kafka")
    for d in docs:
        assert d["apiVersion"] == STRIMZI_API and d["metadata"]["namespace"]
        if d["kind"] != "Kafka":
            assert d["metadata"]["labels"]["strimzi.io/cluster"] == cluster, d["metadata"]["name"]
        for path in REQUIRED[d["kind"]]:
            node: Any = d
            for part in path:
                assert isinstance(node, dict) and part in node, f"{d['kind']} {d['metadata']['name']}: {path}"
                node = node[part]
    for d in docs:
        if d["kind"] == "KafkaTopic":
            assert isinstance(d["spec"]["partitions"], int) and d["spec"]["partitions"] >= 1


def test_the_alert_rules_of_the_evaluator_deployment_are_valid(tmp_path: Path) -> None:
    """The rules ConfigMap mounted by `l7scope alerts evaluate` passes the real rules checker."""
    from pipeline.alert_rules import check_rules

    cm = next(
        d for _, d in MANIFESTS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "l7scope-alert-rules"
    )
    (tmp_path / "rules.yaml").write_text(cm["data"]["rules.yaml"])
    assert check_rules(str(tmp_path / "rules.yaml")) == []
    deployment = next(d for _, d in MANIFESTS if d["metadata"]["name"] == "l7scope-alerts")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[2:5] == ["alerts", "evaluate", "--rules"]


def test_alertmanager_sample_passes_amtool() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool (Debian prometheus-alertmanager) is not installed")
    done = subprocess.run(
        [amtool, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
