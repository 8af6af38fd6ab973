"""requirements/dev.txt (the tested lock, scripts/bootstrap.sh installs it) pins every dependency pyproject
declares, base and extras (the `cluster` extra's cryptography included), at a version the floor allows."""
from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "dev.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[canonicalize_name(name)] = version.strip()
    return pins


def declared() -> dict[str, list[Requirement]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {"base": [Requirement(r) for r in project["dependencies"]],
            **{extra: [Requirement(r) for r in reqs] for extra, reqs in project["optional-dependencies"].items()}}


def test_the_cluster_extra_declares_what_the_embedded_cluster_imports():
    names = {canonicalize_name(r.name) for r in declared()["cluster"]}
    assert {"cryptography", "kubernetes"} <= names


def test_the_lock_pins_every_declared_dependency_within_its_floor():
    pins = lock_pins()
    problems = [f"{group}: {req} (lock: {pins.get(canonicalize_name(req.name))})"
                for group, reqs in declared().items() for req in reqs
                if canonicalize_name(req.name) not in pins
                or not req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True)]
    assert not problems, problems
