"""The lock files agree with pyproject.toml: every requirement it names is pinned, at a version
it allows, and nothing is pinned for pyproject.toml that it no longer asks for. No network:
the files are compared as text (``scripts/lock`` refreshes them)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")
_SOURCE = "gitops-agent-runner (pyproject.toml)"


@dataclass(frozen=True)
class Pin:
    """One ``name==version`` entry of a lock file and what asked for it (``# via``)."""

    version: str
    via: frozenset[str]
    hashed: bool


def read_lock(path: Path) -> dict[str, Pin]:
    """The pins of a uv/pip-compile lock file, by canonical name."""
    pins: dict[str, Pin] = {}
    name = ""
    version = ""
    via: set[str] = set()
    hashed = False

    def flush() -> None:
        if name:
            pins[canonicalize_name(name)] = Pin(version, frozenset(via), hashed)

    for line in path.read_text().splitlines():
        pin = _PIN.match(line)
        if pin:
            flush()
            name, version, via, hashed = pin["name"], pin["version"], set(), False
            continue
        text = line.strip()
        if text.startswith("--hash="):
            hashed = True
        elif text.startswith("# via "):
            via.add(text.removeprefix("# via ").strip())
        elif text.startswith("#   "):
            via.add(text.removeprefix("#").strip())
    flush()
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    names = [*project["dependencies"], *PYPROJECT["build-system"]["requires"]]
    for extra in extras:
        names += project["optional-dependencies"][extra]
    return [Requirement(text) for text in names]


def _build_in() -> list[Requirement]:
    lines = (ROOT / "requirements" / "build.in").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


LOCKS = {"runtime.lock": ("redis",), "dev.lock": ("dev",)}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_requirement_is_pinned_at_an_allowed_version(lock: str) -> None:
    pins = read_lock(ROOT / "requirements" / lock)
    problems = []
    for req in [*_requirements(*LOCKS[lock]), *_build_in()]:
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req} is not in {lock}")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{lock} pins {req.name}=={pin.version}, outside {req}")
    assert not problems, "; ".join(problems) + ": run scripts/lock"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_nothing_is_pinned_for_a_requirement_pyproject_dropped(lock: str) -> None:
    pins = read_lock(ROOT / "requirements" / lock)
    wanted = {canonicalize_name(r.name) for r in _requirements(*LOCKS[lock])}
    stale = sorted(name for name, pin in pins.items()
                   if _SOURCE in pin.via and name not in wanted)
    assert not stale, f"{lock} pins {stale} for pyproject.toml, which no longer asks: " \
                      "run scripts/lock"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_pin_carries_hashes(lock: str) -> None:
    pins = read_lock(ROOT / "requirements" / lock)
    assert pins
    assert [name for name, pin in pins.items() if not pin.hashed] == []


def test_build_in_names_the_build_backend_pyproject_names() -> None:
    backend = {canonicalize_name(Requirement(r).name)
               for r in PYPROJECT["build-system"]["requires"]}
    assert backend <= {canonicalize_name(r.name) for r in _build_in()}


def test_installers_use_the_locks() -> None:
    """CI (through scripts/test) and the runner's image install the pinned versions, then the
    package alone from the tree."""
    test_script = (ROOT / "scripts" / "test").read_text()
    assert "--require-hashes -r requirements/dev.lock" in test_script
    assert "--no-deps" in test_script
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/runtime.lock" in dockerfile
    assert "--no-deps" in dockerfile


def test_read_lock_sees_a_dropped_requirement(tmp_path: Path) -> None:
    """The checks above can fail: a lock with a pin only pyproject.toml asked for."""
    lock = tmp_path / "x.lock"
    lock.write_text("gone==1.0 \\\n    --hash=sha256:00\n    # via " + _SOURCE + "\n"
                    "kept==2.0 ; python_version < '3.12' \\\n    --hash=sha256:11\n"
                    "    # via\n    #   gone\n    #   " + _SOURCE + "\n")
    pins = read_lock(lock)
    assert pins["gone"] == Pin("1.0", frozenset({_SOURCE}), True)
    assert pins["kept"].via == {"gone", _SOURCE}
    assert not Requirement("kept>=3").specifier.contains(pins["kept"].version)
