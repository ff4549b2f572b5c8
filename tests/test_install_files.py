"""pyproject.toml and constraints.txt agree: the pinned set is one that pyproject allows, torch is capped."""
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _direct_requirements(extras=("dev",)):
    project = _project()
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return {canonicalize_name(r.name): r for r in reqs}


def _pins():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        assert version, f"constraints.txt: {line!r} is not an exact pin"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_direct_dependency_is_pinned_to_an_allowed_version():
    pins = _pins()
    for name, req in _direct_requirements().items():
        assert name in pins, f"{name} is a dependency but constraints.txt does not pin it"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {req.specifier}"


def test_torch_pair_is_capped_at_the_pinned_tested_pair():
    reqs, pins = _direct_requirements(), _pins()
    for name, newer in (("torch", "2.15.0"), ("torchvision", "0.30.0")):
        assert not reqs[name].specifier.contains(newer), f"{name} {newer} is untested but allowed"
        # the cap sits right above the tested release: the next minor is the first excluded one
        tested = pins[name]
        assert Version(newer) == Version(f"{tested.major}.{tested.minor + 1}.0")
    # a CPU build of the same release (local label) satisfies the pins and the cap
    assert reqs["torch"].specifier.contains("2.14.1+cpu")
