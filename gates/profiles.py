"""Gate profiles from ``gates.yml``: which checks run, with which limits and commands.

Where the file comes from, first match wins: ``--config PATH``, ``$ORCHESTRATOR_GATES_CONFIG``,
``<repo>/.orchestrator/gates.yml`` (what ``orchestrator init`` writes into a repository), and
the orchestrator's own ``config/gates.yml`` when running from a source checkout.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gates.model import GatesError
from runner.paths import CONFIG_DIR

ENV_CONFIG = "ORCHESTRATOR_GATES_CONFIG"
REPO_CONFIG = Path(".orchestrator") / "gates.yml"
BUNDLED_CONFIG = CONFIG_DIR / "gates.yml"
ALLOW_CI_CHANGES_LABEL = "orchestrator:allow-ci-changes"
DEFAULT_PROTECTED_PATHS = (".forgejo/", ".github/", ".gitea/", ".orchestrator/",
                           "config/gates.yml", "config/prompts/")
_NAME = r"^[a-z0-9][a-z0-9_.-]*$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (try '10m' or 600)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (try '10m' or 600)")
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a duration (must be above 0)")
    return seconds


Seconds = Annotated[float, BeforeValidator(_seconds)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _command_shorthand(value: Any) -> Any:
    return {"run": value} if isinstance(value, str) else value


class Command(_Strict):
    """A shell command run in the checkout; it passes when it exits 0."""

    run: str = Field(min_length=1)
    fast: bool = Field(default=False, description="also run in the sandbox before push")
    timeout: Seconds = Field(default=600.0)


class Limits(_Strict):
    max_files: int | None = Field(default=None, gt=0)
    max_lines: int | None = Field(default=None, gt=0, description="added plus removed lines")


class Coverage(_Strict):
    """Total coverage from coverage.py's JSON report (``coverage json``), checked after tests."""

    threshold: float = Field(ge=0, le=100)
    report: str = Field(default="coverage.json")
    after: str | None = Field(default="tests", description="the command that writes the report")


class Review(_Strict):
    enabled: bool = True
    threshold: float = Field(default=0.9, ge=0, le=1)


class Profile(_Strict):
    """One named set of gates."""

    name: str = ""
    description: str = ""
    ci_contexts: list[str] = Field(default_factory=list,
                                   description="CI contexts that must be green on the PR head")
    secret_scan: bool = True
    limits: Limits = Field(default_factory=Limits)
    commands: dict[str, Annotated[Command, BeforeValidator(_command_shorthand)]] = Field(
        default_factory=dict)
    coverage: Coverage | None = None
    review: Review = Field(default_factory=Review)
    fast_timeout: Seconds = Field(default=60.0,
                                  description="limit for the in-process checks (scan, size)")

    def fast_commands(self) -> dict[str, Command]:
        """The commands the sandbox runs before push."""
        return {name: cmd for name, cmd in self.commands.items() if cmd.fast}


class GatesConfig(_Strict):
    """The whole ``gates.yml``."""

    version: int = 1
    default_profile: str = "standard"
    protected_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_PROTECTED_PATHS))
    allow_ci_changes_label: str = ALLOW_CI_CHANGES_LABEL
    profiles: dict[Annotated[str, Field(pattern=_NAME)], Profile]
    source: str = ""

    def profile(self, name: str) -> Profile:
        """The profile ``name``; GatesError listing the known ones if there is none."""
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise GatesError(f"{self.source or 'gates.yml'}: no profile {name!r} "
                             f"(known: {known})") from None


def _line_of(text: str, path: tuple[Any, ...]) -> int:
    """The line of a key path in YAML text, or of its nearest parent; 1 if unknown."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 1
    line = 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and \
                part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _resolve_extends(profiles: dict[str, Any], source: str) -> dict[str, Any]:
    """Expand ``extends: other`` (a child's keys replace the parent's, mappings merge)."""

    def merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(parent)
        for key, value in child.items():
            if value is None:  # `key: null` removes what the parent set
                out.pop(key, None)
            elif isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out

    resolved: dict[str, Any] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in resolved:
            return dict(resolved[name])
        raw = profiles.get(name)
        if not isinstance(raw, dict):
            raise GatesError(f"{source}: profiles.{name}: expected a mapping of settings")
        parent_name = raw.get("extends")
        body = {k: v for k, v in raw.items() if k != "extends"}
        if parent_name is not None:
            if parent_name in chain:
                loop = " -> ".join((*chain, name, parent_name))
                raise GatesError(f"{source}: profiles.{name}.extends: loop ({loop})")
            if parent_name not in profiles:
                known = ", ".join(sorted(profiles))
                raise GatesError(f"{source}: profiles.{name}.extends: no profile "
                                 f"{parent_name!r} (known: {known})")
            parent = resolve(parent_name, (*chain, name))
            parent.pop("description", None)
            body = merge(parent, body)
        resolved[name] = body
        return dict(body)

    for name in profiles:
        resolve(str(name), ())
    return resolved


def parse_config(text: str, source: str = "gates.yml") -> GatesConfig:
    """Validate the text of a ``gates.yml``; GatesError names the file, line and key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise GatesError(f"{source}:{mark.line + 1 if mark else 1}: not valid YAML: "
                         f"{problem}") from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise GatesError(f"{source}:1: expected a mapping with a `profiles:` mapping "
                         "(see config/gates.yml)")
    data = dict(data)
    data["profiles"] = {name: {**body, "name": name} for name, body in
                        _resolve_extends(data["profiles"], source).items()}
    data["source"] = source
    try:
        config = GatesConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        found = f" (found {error['input']!r})" if "input" in error and \
            not isinstance(error["input"], dict) else ""
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        raise GatesError(f"{source}:{_line_of(text, loc)}: {dotted}: {message}{found}") from None
    if config.default_profile not in config.profiles:
        raise GatesError(f"{source}: default_profile {config.default_profile!r} is not a "
                         f"profile (known: {', '.join(sorted(config.profiles))})")
    return config


def find_config(repo: str | os.PathLike[str] | None = None,
                explicit: str | os.PathLike[str] | None = None,
                environ: dict[str, str] | None = None) -> Path:
    """The gates.yml to use (see the module docstring for the order)."""
    environ = dict(os.environ) if environ is None else environ
    if explicit:
        return Path(explicit)
    if environ.get(ENV_CONFIG):
        return Path(environ[ENV_CONFIG])
    if repo is not None and (Path(repo) / REPO_CONFIG).is_file():
        return Path(repo) / REPO_CONFIG
    if BUNDLED_CONFIG.is_file():
        return BUNDLED_CONFIG
    raise GatesError(f"no gates configuration: pass --config, set {ENV_CONFIG}, or write "
                     f"{REPO_CONFIG} (`orchestrator init` does)")


def load_config(path: str | os.PathLike[str]) -> GatesConfig:
    """Read and validate one gates.yml."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GatesError(f"{file}: no such file (copy config/gates.yml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GatesError(f"{file}: cannot read: {exc}") from None
    return parse_config(text, str(file))
