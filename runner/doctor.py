"""``orchestrator doctor``: what the runner needs, one check each, with the fix when one fails.

A configuration that does not load fails once, on its own line; the checks that need it say
so instead of repeating its error.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner import config
from runner.store import open_store
from runner.store.base import StoreError


@dataclass
class Check:
    name: str
    required: bool
    run: Callable[[], str]  # returns a detail line; raises DoctorFail(fix)


class DoctorFail(Exception):
    """A check failed; the message says what to do."""


def doctor_checks(config_path: str | None) -> list[Check]:
    """The checks, in order; each one's ``run`` returns a detail or raises DoctorFail."""
    state: dict[str, Any] = {}

    def usable() -> config.Settings:
        if "settings" not in state:
            raise DoctorFail("needs a configuration that loads (see above)")
        settings: config.Settings = state["settings"]
        return settings

    def python() -> str:
        # The package refuses older Pythons at install; this names the one in use.
        return f"Python {platform.python_version()} ({sys.executable})"

    def settings() -> str:
        try:
            state["settings"] = config.load(config_path)
        except config.ConfigError as exc:
            with contextlib.suppress(config.ConfigError):  # a missing secret: others still run
                state["settings"] = config.load(config_path, require_secrets=False)
            raise DoctorFail(f"{exc} (then run `orchestrator config check`)") from None
        return str(config.find_config_file(config_path) or "no file: defaults")

    def store() -> str:
        s = usable()
        try:
            open_store(s).ping()
        except StoreError as exc:
            raise DoctorFail(str(exc)) from None
        return f"redis {s.store.redis}" if s.store.redis else f"sqlite {s.store.sqlite}"

    def docker_engine() -> str:
        import docker  # only here: the other checks must work without an engine

        try:
            client = docker.from_env(timeout=5)
            version = client.version().get("Version", "?")
            state["docker"] = client
        except Exception as exc:  # whatever the engine's client raises, the doctor says it  # noqa: BLE001
            raise DoctorFail(f"no Docker engine answers ({type(exc).__name__}): start dockerd, "
                             "set DOCKER_HOST, or set sandbox.backend: local") from None
        return f"engine {version}"

    def image() -> str:
        s = usable()
        client = state.get("docker")
        if client is None:
            raise DoctorFail("needs the Docker engine (see above)")
        try:
            client.images.get(s.sandbox.image)
        except Exception:  # whatever the engine's client raises, the doctor says it  # noqa: BLE001
            raise DoctorFail(f"image {s.sandbox.image} is missing: run "
                             "scripts/build-sandbox-image") from None
        return s.sandbox.image

    from runner.forge.app_doctor import app_checks  # PyGithub only when the doctor runs

    def runtime() -> str:
        s = usable()
        client = state.get("docker")
        if client is None:
            raise DoctorFail("needs the Docker engine (see above)")
        return runtime_status(client, s.sandbox.runtime)

    apps: list[Check] = []
    try:
        loaded = config.load(config_path, require_secrets=False)
        uses_docker = loaded.sandbox.backend == "docker"
        wants_runtime = uses_docker and loaded.sandbox.runtime is not None
        apps = [Check(c.name, True, c.run) for c in app_checks(loaded)]
    except config.ConfigError:
        uses_docker, wants_runtime = True, False
    return [
        Check("python", True, python),
        Check("config", True, settings),
        Check("store", True, store),
        Check("docker", uses_docker, docker_engine),
        Check("sandbox image", uses_docker, image),
        Check("runtime", wants_runtime, runtime),
        *apps,
    ]


def runtime_status(client: Any, wanted: str | None) -> str:
    """Whether the engine has the sandbox's runtime (``sandbox.runtime``); DoctorFail with the
    fix when a configured one is missing. Without one configured, says if gVisor could be."""
    runtimes = sorted((client.info().get("Runtimes") or {}).keys())
    if wanted is None:
        gvisor = "runsc (gVisor) is available: sandbox.runtime: runsc" if "runsc" in runtimes \
            else "runsc (gVisor) is not registered: scripts/register-runsc"
        return f"the engine's default; {gvisor}"
    if wanted not in runtimes:
        raise DoctorFail(f"sandbox.runtime is {wanted!r} but the engine has only "
                         f"{', '.join(runtimes) or 'its default'}: "
                         + ("run scripts/register-runsc as root (installs runsc and adds it "
                            "to /etc/docker/daemon.json)" if wanted == "runsc" else
                            f"register {wanted} in /etc/docker/daemon.json")
                         + ", or unset sandbox.runtime")
    return f"{wanted} ({'gVisor' if wanted == 'runsc' else 'registered'})"
