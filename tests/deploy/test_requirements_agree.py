"""One requirements story: the README, docs/troubleshooting.md, docs/platform.md, `l7scope doctor`,
deploy/setup.sh and the agent DaemonSet state the same minimum kernel and capabilities."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from l7scope import doctor

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ("README.md", "docs/troubleshooting.md", "docs/platform.md")


def test_every_document_and_the_doctor_name_the_same_minimum_kernel() -> None:
    wanted = "{}.{}".format(*doctor.MIN_KERNEL)
    assert wanted == "6.3"  # the sock:sock_send_length/sock_recv_length tracepoints
    for name in TEXTS:
        text = (ROOT / name).read_text()
        found = set(re.findall(r"Linux \**≥ (\d+\.\d+)", text))
        assert found == {wanted}, (name, found)
    assert f"Linux {wanted} or later" in (ROOT / "deploy/setup.sh").read_text()
    assert doctor.check_kernel("6.2.0").status is doctor.Status.FAIL


def test_the_daemonset_capabilities_are_the_documented_ones() -> None:
    docs = (ROOT / "deploy/kubernetes/agent-daemonset.yaml").read_text()
    agent = next(d for d in yaml.safe_load_all(docs) if d and d.get("kind") == "DaemonSet")
    added = set(agent["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"])
    for name in TEXTS:
        text = (ROOT / name).read_text()
        mentioned = set(re.findall(r"CAP_([A-Z_]+)", text)) - {"SYS_RESOURCE"}
        assert mentioned == added, (name, mentioned ^ added)
        assert re.search(r"(?i)\bnot [`*]*CAP_SYS_RESOURCE", text), name  # said not to be needed
    assert "SYS_RESOURCE" not in added
