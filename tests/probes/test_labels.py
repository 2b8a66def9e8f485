"""Labels from sample cgroup lines and a fake /proc + kubelet tree, and from this very process."""

from __future__ import annotations

import os
from pathlib import Path

from probes.labels import Labels, ProcessLabels, container_id, parse_pod_labels, pod_uid, service_name

CID = "3f1c5a0e9b7d4c2a8e6f1b3d5c7a9e0f2b4d6c8a0e1f3b5d7c9a1e3f5b7d9c0a"
UID = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
SAMPLES = {
    "docker": f"0::/system.slice/docker-{CID}.scope\n",
    "docker-cgroupfs": f"12:memory:/docker/{CID}\n11:cpu:/docker/{CID}\n",
    "containerd-k8s": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice/"
        f"cri-containerd-{CID}.scope\n"
    ),
    "crio-k8s": f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope\n",
    "k8s-cgroupfs": f"4:memory:/kubepods/besteffort/pod{UID}/{CID}\n",
    "podman": f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope\n",
}


def test_container_ids_from_cgroup_lines() -> None:
    for name, text in SAMPLES.items():
        assert container_id(text) == CID, name
    assert container_id("0::/user.slice/session-3.scope\n") == ""
    assert container_id("0::/\n") == ""


def test_pod_uid_from_cgroup_lines() -> None:
    for name in ("containerd-k8s", "crio-k8s", "k8s-cgroupfs"):
        assert pod_uid(SAMPLES[name]) == UID, name
    assert pod_uid(SAMPLES["docker"]) == ""


def test_service_name_precedence() -> None:
    lab = Labels(process="python3", executable="/usr/bin/python3.11", container="api")
    assert service_name(lab, {"api": "checkout"}, {"app": "x"}) == "checkout"
    assert service_name(lab, {}, {"app.kubernetes.io/name": "cart", "app": "x"}) == "cart"
    assert service_name(lab, {}, {}) == "api"
    assert service_name(Labels(process="nginx"), {}, {}) == "nginx"
    # What the process names itself comes after the mapping and before everything else.
    env = {"OTEL_SERVICE_NAME": "orders", "OTEL_RESOURCE_ATTRIBUTES": "service.name=other"}
    assert service_name(lab, {"api": "checkout"}, {}, env) == "checkout"
    assert service_name(lab, {}, {"app": "x"}, env) == "orders"
    attrs = {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, service.name=my%20shop"}
    assert service_name(lab, {}, {"app": "x"}, attrs) == "my shop"
    assert service_name(lab, {}, {"app": "x"}, {"OTEL_SERVICE_NAME": " "}) == "x"  # blank: not a name
    # The command line comes after the container name, before the process name.
    argv = ["python3", "-m", "orders"]
    assert service_name(lab, {}, {}, {}, argv) == "api"
    assert service_name(Labels(process="python3"), {}, {}, {}, argv) == "orders"
    assert service_name(Labels(process="python3"), {}, {}, {}, ["python3", "-c", "x"]) == "python3"
    assert parse_pod_labels('app="web"\ntier="front"\n') == {"app": "web", "tier": "front"}


def test_kubernetes_pod_from_a_proc_tree(tmp_path: Path) -> None:
    proc, pods = tmp_path / "proc", tmp_path / "pods"
    base = proc / "42"
    (base / "root/var/run/secrets/kubernetes.io/serviceaccount").mkdir(parents=True)
    (base / "root/etc/podinfo").mkdir(parents=True)
    (base / "comm").write_text("gunicorn\n")
    (base / "cgroup").write_text(SAMPLES["containerd-k8s"])
    (base / "environ").write_bytes(b"PATH=/bin\0HOSTNAME=web-7d9f8-abcde\0")
    (base / "root/var/run/secrets/kubernetes.io/serviceaccount/namespace").write_text("shop")
    (base / "root/etc/podinfo/labels").write_text('app="storefront"\n')
    os.symlink("/usr/local/bin/gunicorn", base / "exe")
    (pods / UID / "containers" / "web").mkdir(parents=True)
    lab = ProcessLabels(proc=proc, kubelet_pods=pods).get(42)
    assert lab == Labels("gunicorn", "/usr/local/bin/gunicorn", CID, UID, "web-7d9f8-abcde", "shop", "web",
                         "storefront")  # fmt: skip


def test_this_process() -> None:
    lab = ProcessLabels().get(os.getpid())
    assert lab.executable == os.path.realpath(f"/proc/{os.getpid()}/exe")
    assert lab.process and lab.pod == ""
    assert lab.service == "pytest"  # python -m pytest, or the venv's pytest script: named by its command line
