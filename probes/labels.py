"""Process labels for a connection: executable, container id, Kubernetes pod/namespace/container, and
`service.name` — read once per pid from /proc (and the kubelet's pod directories), cached.

Container ids come from the cgroup path (docker, containerd/cri-o under Kubernetes, podman/libpod);
the pod uid from the kubepods slice. Pod name and namespace: the process's own HOSTNAME and
service-account namespace (what the downward API and the kubelet give every pod); the container name
from the kubelet's pod directory when the pod has one container.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from probes.command_name import command_name

# 64 hex digits at the end of a path element: "docker-<id>.scope", "cri-containerd-<id>.scope",
# "crio-<id>.scope", "libpod-<id>.scope", or a bare "<id>" (cgroupfs drivers).
_CONTAINER = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$")
# "kubepods-burstable-pod<uid with _>.slice" (systemd) or "/kubepods/burstable/pod<uid>" (cgroupfs).
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
SA_NAMESPACE = "var/run/secrets/kubernetes.io/serviceaccount/namespace"
PODINFO_LABELS = "etc/podinfo/labels"  # the usual mount point of a downward-API `labels` volume
KUBELET_PODS = Path("/var/lib/kubelet/pods")


@dataclass(frozen=True, slots=True)
class Labels:
    process: str = ""
    executable: str = ""
    container_id: str = ""
    pod_uid: str = ""
    pod: str = ""
    namespace: str = ""
    container: str = ""
    service: str = ""


def container_id(cgroup_text: str) -> str:
    """The container id in a /proc/PID/cgroup text, or ""."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        for element in reversed(path.split("/")):
            m = _CONTAINER.search(element)
            if m:
                return m.group(1)
    return ""


def pod_uid(cgroup_text: str) -> str:
    m = _POD.search(cgroup_text)
    return m.group(1).replace("_", "-") if m else ""


def service_name(
    labels: Labels,
    mapping: Mapping[str, str],
    pod_labels: Mapping[str, str],
    env: Mapping[str, str] | None = None,
    argv: Sequence[str] = (),
) -> str:
    """The connection's `service`: the config mapping (container, process or executable name) first,
    then what the process names itself (`OTEL_SERVICE_NAME`, then `service.name` in
    `OTEL_RESOURCE_ATTRIBUTES`), then pod labels, then the container name, then the program its command
    line runs (probes.command_name), then the process name."""
    for key in (labels.container, labels.process, labels.executable):
        if key and key in mapping:
            return mapping[key]
    env = env or {}
    own = env.get("OTEL_SERVICE_NAME", "").strip() or resource_attributes(env).get("service.name", "")
    if own:
        return own
    for key in ("app.kubernetes.io/name", "app"):
        if pod_labels.get(key):
            return pod_labels[key]
    return labels.container or command_name(argv) or labels.process


def resource_attributes(env: Mapping[str, str]) -> dict[str, str]:
    """`OTEL_RESOURCE_ATTRIBUTES` (`key=value,...`, values percent-encoded) as the SDKs read it."""
    out = {}
    for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() and value.strip():
            out[key.strip()] = unquote(value.strip())
    return out


def parse_pod_labels(text: str) -> dict[str, str]:
    """A downward-API labels file: one `key="value"` per line."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def _cmdline(base: Path) -> list[str]:
    try:
        raw = (base / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _environ(proc: Path, pid: int) -> dict[str, str]:
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


class ProcessLabels:
    """pid -> Labels, cached (oldest dropped first past `limit`)."""

    def __init__(
        self,
        services: Mapping[str, str] | None = None,
        proc: Path = Path("/proc"),
        kubelet_pods: Path = KUBELET_PODS,
        limit: int = 16384,
    ) -> None:
        self._services = dict(services or {})
        self._proc = proc
        self._pods = kubelet_pods
        self._cache: dict[int, Labels] = {}
        self._limit = limit

    def forget(self, pid: int) -> None:
        self._cache.pop(pid, None)

    def get(self, pid: int, comm: str = "") -> Labels:
        cached = self._cache.get(pid)
        if cached is not None:
            return cached
        labels = self._read(pid, comm)
        if len(self._cache) >= self._limit:
            self._cache.pop(next(iter(self._cache)))
        self._cache[pid] = labels
        return labels

    def _read(self, pid: int, comm: str) -> Labels:
        base = self._proc / str(pid)
        process = _read(base / "comm").rstrip("\n") or comm
        try:
            executable = os.readlink(base / "exe")
        except OSError:
            executable = ""
        cgroup = _read(base / "cgroup")
        uid = pod_uid(cgroup)
        pod = namespace = container = ""
        pod_labels: dict[str, str] = {}
        env = _environ(self._proc, pid)
        if uid:
            pod_labels = parse_pod_labels(_read(base / "root" / PODINFO_LABELS))
            pod = env.get("POD_NAME") or env.get("HOSTNAME", "")
            namespace = env.get("POD_NAMESPACE") or _read(base / "root" / SA_NAMESPACE).strip()
            container = env.get("CONTAINER_NAME") or self._only_container(uid)
        labels = Labels(process, executable, container_id(cgroup), uid, pod, namespace, container)
        service = service_name(labels, self._services, pod_labels, env, _cmdline(base))
        return Labels(process, executable, labels.container_id, uid, pod, namespace, container, service)

    def _only_container(self, uid: str) -> str:
        try:
            names = os.listdir(self._pods / uid / "containers")
        except OSError:
            return ""
        return names[0] if len(names) == 1 else ""
