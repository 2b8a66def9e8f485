"""protobuf 5.29 through 7 is supported: the pin in pyproject.toml admits that range, and the generated
modules ask for no runtime newer than its lowest release (they check it when imported)."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

from proto.generate import GENERATOR, HERE

PROJECT = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]
# _runtime_version.ValidateProtobufRuntimeVersion(_runtime_version.Domain.PUBLIC, 5, 29, 0, '', ...)
GENCODE = re.compile(r"ValidateProtobufRuntimeVersion\(\s*\S+,\s*(\d+),\s*(\d+),\s*(\d+),")


def requirement(name: str) -> Requirement:
    (req,) = (r for r in map(Requirement, PROJECT["dependencies"]) if r.name == name)
    return req


def lowest_admitted(req: Requirement) -> Version:
    (floor,) = (Version(s.version) for s in req.specifier if s.operator == ">=")
    return floor


def test_protobuf_pin_admits_5_29_through_7() -> None:
    spec = requirement("protobuf").specifier
    assert lowest_admitted(requirement("protobuf")) == Version("5.29")
    for version in ("5.29.0", "5.29.6", "6.30.0", "6.33.6", "7.34.0", "7.36.2"):
        assert spec.contains(version), version
    assert not spec.contains("5.28.3"), "the generated modules refuse protobuf < 5.29"


def test_generated_modules_load_on_the_lowest_admitted_protobuf() -> None:
    floor = lowest_admitted(requirement("protobuf"))
    modules = sorted(HERE.glob("*_pb2.py"))
    assert modules
    for path in modules:
        found = GENCODE.search(path.read_text())
        assert found, f"{path.name}: no runtime version check found"
        gencode = Version(".".join(found.groups()))
        assert gencode <= floor, f"{path.name} needs protobuf >= {gencode}, the pin admits {floor}"


def test_generator_pin_is_the_one_generate_py_checks() -> None:
    assert PROJECT["optional-dependencies"]["protoc"] == [f"grpcio-tools=={GENERATOR}"]
