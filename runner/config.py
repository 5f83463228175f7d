"""``orchestrator.yml`` into typed settings.

Every mistake is reported as one line that names the file, the line, the key, what was found
and what is allowed, e.g. ``orchestrator.yml:12: sandbox.memory: '2 gigs' is not a size (try
'2g')``. ``ORCHESTRATOR_<SECTION>__<KEY>`` environment variables override the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_FILE = "orchestrator.yml"
ENV_PREFIX = "ORCHESTRATOR_"
ENV_FILE = "ORCHESTRATOR_CONFIG"


class ConfigError(Exception):
    """A configuration mistake, already phrased as one line the user can act on."""

    exit_code = 2


# ---------------------------------------------------------------- value types

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value: Any) -> int:
    """``'2g'``, ``'512m'``, ``'1.5GiB'`` or a number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (try '2g')")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{value!r} is not a size (must be above 0; try '2g')")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size (try '2g')")
    number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * 1024 ** " kmgt".index(unit or " "))
    if size <= 0:
        raise ValueError(f"{value!r} is not a size (must be above 0; try '2g')")
    return size


def parse_duration(value: Any) -> float:
    """``'30m'``, ``'90s'``, ``'1h'`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (try '30m')")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (try '30m' or '90s')")
        seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a duration (must be above 0; try '30m')")
    return seconds


# The schema accepts the written forms ("2g", "30m") that editors should complete.
Size = Annotated[int, BeforeValidator(parse_size, json_schema_input_type=int | str)]
Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=float | str)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Permission = Literal["admin", "write", "read"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sections


class GitHubAppConfig(Section):
    """A GitHub App the runner acts as (``<slug>[bot]``), instead of a personal token."""

    app_id: str = Field(
        description="the App's ID or client ID (its settings page, \"About\")",
        coerce_numbers_to_str=True, min_length=1)
    private_key_env: EnvName | None = Field(
        default=None, description="name of the env var holding the App's PEM private key")
    private_key_file: str | None = Field(
        default=None, description="path of the App's PEM private key file")

    @model_validator(mode="after")
    def _one_key(self) -> GitHubAppConfig:
        if (self.private_key_env is None) == (self.private_key_file is None):
            raise ValueError("set exactly one of private_key_env and private_key_file")
        return self


class ForgeConfig(Section):
    """One forge the runner talks to."""

    kind: Literal["github", "forgejo"] = Field(description="github or forgejo (also Gitea)")
    base_url: str = Field(
        default="https://api.github.com",
        description="API root: https://api.github.com, https://ghe.example/api/v3, "
        "or a Forgejo instance's URL (without /api/v1)",
    )
    token_env: EnvName | None = Field(
        default=None, description="name of the env var holding the bot's API token "
        "(not needed on GitHub with `app`)")
    app: GitHubAppConfig | None = Field(
        default=None, description="github: authenticate as this GitHub App (installation "
        "tokens, renewed before they expire) instead of token_env")
    webhook_secret_env: EnvName | None = Field(
        default=None, description="name of the env var holding the webhook secret"
    )
    bot_user: str | None = Field(default=None, description="the bot account's login")
    throttle: bool = Field(
        default=False, description="github: pace requests (0.25 s apart, writes 1 s apart), "
        "for installations near GitHub's secondary rate limits; slows dispatch")
    timeout: Duration = Field(default=30.0, gt=0, description="one API request, e.g. 30s")
    retries: int = Field(
        default=4, ge=0, le=20,
        description="extra attempts at a request answered 429 or 5xx, backing off")
    git_url: str | None = Field(
        default=None, description="root of the repositories' https clone URLs when it is not "
        "the web root of base_url, e.g. https://git.example.com")

    @model_validator(mode="after")
    def _one_credential(self) -> ForgeConfig:
        if self.app is not None and self.kind != "github":
            raise ValueError("app: GitHub Apps exist only on GitHub (kind: github)")
        if self.app is None and self.token_env is None:
            raise ValueError("set token_env (or, on GitHub, app)")
        return self

    @field_validator("git_url")
    @classmethod
    def _git_url_is_http(cls, url: str | None) -> str | None:
        # The token goes with git over https (an http.extraheader); ssh would need a key.
        if url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise ValueError(f"{url!r} is not an https URL (e.g. https://git.example.com): "
                             "the runner pushes with its token over https")
        return url


class RepoConfig(Section):
    """One repository whose issues the runner works on."""

    name: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", description="owner/name")
    forge: str = Field(description="the name of an entry under `forges`")
    base_branch: str = Field(default="main", description="branch PRs target")
    gate_profile: str = Field(default="standard", description="profile in config/gates.yml")
    required_contexts: list[str] = Field(
        default_factory=list, description="CI contexts that must be green on the PR's head"
    )
    yolo: bool = Field(default=False, description="skip quality gates for this repo (loudly)")
    allow_yolo_label: bool = Field(
        default=False, description="let the label orchestrator:yolo turn gates off per issue"
    )
    priority: int = Field(
        default=5, ge=1, le=10,
        description="1 (last) to 10 (first): the order runs waiting for a worker slot are "
                    "claimed in; a writer's orchestrator:priority-<n> label overrides it")
    daily_cost_usd: float | None = Field(
        default=None, gt=0,
        description="this repository's share of the daily spend budget (USD, UTC day), on "
                    "top of limits.daily_cost_usd. None: only the global budget")


class LabelsConfig(Section):
    trigger: str = Field(default="orchestrator", description="label that starts a run")
    kill: str = Field(default="orchestrator:kill", description="label that stops a run")


class Price(Section):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float = Field(default=0.0, ge=0)
    cache_write: float = Field(default=0.0, ge=0)


def _default_prices() -> dict[str, Price]:
    return {
        "claude-sonnet-4-6": Price(input=3, output=15, cache_read=0.3, cache_write=3.75),
        "claude-sonnet-4-5": Price(input=3, output=15, cache_read=0.3, cache_write=3.75),
        "claude-opus-4-5": Price(input=5, output=25, cache_read=0.5, cache_write=6.25),
        "claude-haiku-4-5": Price(input=1, output=5, cache_read=0.1, cache_write=1.25),
    }


class GatewayConfig(Section):
    """The model gateway a command agent reaches instead of holding a key (docs/agent.md)."""

    enabled: bool = Field(
        default=True,
        description="kind command: the agent reaches the model only through a per-run gateway "
                    "in the runner, which holds the key and meters the budget")
    openai_base_url: str | None = Field(
        default=None,
        description="also forward an OpenAI-compatible API (e.g. https://api.openai.com/v1) "
                    "at <gateway>/openai/v1")
    openai_api_key_env: EnvName = Field(default="OPENAI_API_KEY")


class AgentConfig(Section):
    kind: Literal["claude", "command"] = Field(
        default="claude", description="claude: built-in loop in the runner; command: a CLI agent"
    )
    model: str = Field(default="claude-sonnet-4-6")
    api_key_env: EnvName = Field(default="ANTHROPIC_API_KEY")
    base_url: str | None = Field(default=None, description="Messages API root (emulator, proxy)")
    max_turns: int = Field(default=60, gt=0)
    max_tokens: int = Field(default=2_000_000, gt=0, description="input+output tokens per run")
    max_cost_usd: float = Field(default=5.0, gt=0)
    context_window: int = Field(default=200_000, gt=0)
    max_output_tokens: int = Field(default=8192, gt=0, description="per model reply")
    outage_timeout: Duration = Field(
        default=parse_duration("15m"),
        description="how long a model provider answering 429/529/5xx (or unreachable) is "
                    "waited out, backing off, before the run fails; e.g. 15m")
    command: str | None = Field(
        default=None, description="kind command: template run in the container, {prompt_file}"
    )
    pass_env: list[EnvName] = Field(
        default_factory=list,
        description="env vars given to a command agent; this puts those secrets in the container",
    )
    prices: dict[str, Price] = Field(default_factory=_default_prices)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)

    @model_validator(mode="before")
    @classmethod
    def _retries_became_a_time(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_retries" in data:
            raise ValueError("max_retries is gone: a model provider's outage is now waited out "
                             "for a time, agent.outage_timeout (e.g. '15m'); remove max_retries")
        return data

    @model_validator(mode="after")
    def _command_needs_template(self) -> AgentConfig:
        if self.kind == "command" and not self.command:
            raise ValueError("kind 'command' needs agent.command (a command template)")
        return self


class SandboxConfig(Section):
    backend: Literal["docker", "local"] = Field(
        default="docker", description="local runs commands on the host, without isolation"
    )
    image: str = Field(default="orchestrator-sandbox:latest")
    cpus: float = Field(default=2.0, gt=0)
    memory: Size = Field(default=parse_size("2g"), description="e.g. 2g, 512m")
    pids: int = Field(default=512, gt=0)
    network: Literal["none", "bridge"] = Field(default="none")
    runtime: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]+$",
        description="the engine's OCI runtime (default: the engine's default; runsc: gVisor)")
    env: dict[EnvName, str] = Field(
        default_factory=dict,
        description="variables set in every sandbox (never a secret: a value equal to one of "
                    "the runner's secrets is refused)")
    warm: int | None = Field(
        default=None, ge=0,
        description="sandboxes each serve process starts ahead of runs (default: one per "
                    "worker slot, limits.max_concurrent; 0: none)")
    run_timeout: Duration = Field(default=parse_duration("60m"), description="e.g. 60m")
    command_timeout: Duration = Field(default=parse_duration("10m"))


class StoreConfig(Section):
    sqlite: str = Field(default=".orchestrator/state.db", description="path of the SQLite file")
    redis: str | None = Field(
        default=None, pattern=r"^(redis|rediss|unix|valkey)://", description="redis://host:6379/0"
    )


class ServerConfig(Section):
    host: str = Field(default="127.0.0.1")
    port: int = Field(default=8080, ge=0, le=65535)
    api_token_env: EnvName = Field(default="ORCHESTRATOR_API_TOKEN")


class LimitsConfig(Section):
    max_concurrent: int = Field(default=4, gt=0)
    per_repo: int = Field(default=2, gt=0)
    max_iterations: int = Field(default=3, gt=0)
    poll_interval: Duration = Field(default=parse_duration("60s"))
    lease_ttl: Duration = Field(default=parse_duration("30s"))
    ci_timeout: Duration = Field(default=parse_duration("30m"))
    ci_poll_interval: Duration = Field(
        default=parse_duration("10s"),
        description="first wait between looks at a run's CI when no webhook wakes it; it "
                    "doubles after each look, up to ci_poll_max")
    ci_poll_max: Duration = Field(
        default=parse_duration("5m"),
        description="longest wait between looks at a run's CI; with webhooks, the only look "
                    "besides the one a CI event asks for")
    trigger_permission: Permission = Field(default="write")
    max_follow_ups: int = Field(
        default=3, ge=0,
        description="follow-up runs per issue started by reviews, bot mentions, /retry or a "
                    "conflicting base; at the bound the runner says so on the pull request")
    follow_up_quiet: Duration = Field(
        default=parse_duration("60s"),
        description="how long review comments are gathered after the last one before the "
                    "follow-up they ask for starts (comments submitted one by one)")
    daily_cost_usd: float | None = Field(
        default=None, gt=0,
        description="model spend (USD) of the runs started in one UTC day, across every "
                    "runner process sharing the store; once reached no new run starts until "
                    "the next day or a raised limit. None: no budget")


class ReviewConfig(Section):
    enabled: bool = True
    model: str = Field(default="claude-sonnet-4-6")
    threshold: float = Field(default=0.9, ge=0, le=1)
    max_diff_chars: int = Field(
        default=200_000, ge=1000,
        description="a longer diff is cut to this many characters and the reviewer told so")


class Settings(Section):
    """The whole configuration."""

    data_dir: str = Field(default=".orchestrator", description="mirrors, worktrees, logs")
    forges: dict[str, ForgeConfig] = Field(default_factory=dict)
    repos: list[RepoConfig] = Field(default_factory=list)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    yolo: bool = Field(default=False, description="skip quality gates everywhere (loudly)")
    gates_config: str | None = Field(
        default=None,
        description="gate profiles for repositories without .orchestrator/gates.yml on their "
                    "base branch (default: $ORCHESTRATOR_GATES_CONFIG, else the bundled "
                    "config/gates.yml)")

    @field_validator("repos")
    @classmethod
    def _unique_repos(cls, repos: list[RepoConfig]) -> list[RepoConfig]:
        seen: set[str] = set()
        for repo in repos:
            if repo.name in seen:
                raise ValueError(f"repo {repo.name!r} is listed twice")
            seen.add(repo.name)
        return repos

    def repo(self, name: str) -> RepoConfig:
        """The configured repository ``owner/name``; KeyError if it is not configured."""
        for repo in self.repos:
            if repo.name.lower() == name.lower():
                return repo
        raise KeyError(name)


# ---------------------------------------------------------------- loading


class _Located:
    """A YAML document as plain data plus the line of every key path."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: dict[tuple[Any, ...], int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else 1
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{source}:{line}: not valid YAML: {problem}") from None
        self.data = self._build(node, ()) if node is not None else {}

    def _build(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = yaml.SafeLoader(" ").construct_object(key_node)  # scalar keys only
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                if key in out:
                    raise ConfigError(
                        f"{self.source}:{key_node.start_mark.line + 1}: "
                        f"{_dotted((*path, key))}: key appears twice"
                    )
                out[key] = self._build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(item, (*path, i)) for i, item in enumerate(node.value)]
        loader = yaml.SafeLoader("")
        return loader.construct_object(node, deep=True)

    def line(self, path: tuple[Any, ...]) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error: Any, model: type[BaseModel] = Settings) -> str:
    """One pydantic error -> 'what was found, what is allowed'."""
    kind, found = error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"unknown key (allowed here: {', '.join(_allowed_keys(error['loc'][:-1]))})"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{found!r} is not allowed (allowed: {ctx.get('expected', '')})"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}[kind]
        limit = next(iter(ctx.values()), "")
        return f"{found!r} is out of range (must be {op} {limit})"
    if kind == "string_pattern_mismatch":
        return f"{found!r} does not have the expected form (pattern {ctx.get('pattern')})"
    expected = {"int_parsing": "a whole number", "int_type": "a whole number",
                "float_parsing": "a number", "float_type": "a number",
                "bool_parsing": "true or false", "bool_type": "true or false",
                "string_type": "a string", "dict_type": "a mapping of keys to values",
                "list_type": "a list", "model_type": "a mapping of keys to values",
                "int_from_float": "a whole number"}.get(kind)
    if expected:
        return f"{found!r} is not {expected}"
    return f"{found!r}: {error['msg']}"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Settings
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)),
                     None)
        if model is None and args:  # dict[str, Model]: the next part is a free name
            model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)),
                         None)
    return sorted(model.model_fields) if model is not None else []


def _env_overrides(environ: dict[str, str]) -> dict[tuple[str, ...], Any]:
    """``ORCHESTRATOR_SANDBOX__MEMORY=4g`` -> {('sandbox', 'memory'): '4g'}."""
    out: dict[tuple[str, ...], Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_FILE:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
        if path[0] not in Settings.model_fields:
            continue  # e.g. ORCHESTRATOR_API_TOKEN is a secret, not an override
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[path] = value
    return out


def _apply(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _check_references(settings: Settings, where: _Located) -> None:
    for i, repo in enumerate(settings.repos):
        if repo.forge not in settings.forges:
            known = ", ".join(sorted(settings.forges)) or "none are configured"
            raise ConfigError(
                f"{where.source}:{where.line(('repos', i, 'forge'))}: repos[{i}].forge: "
                f"{repo.forge!r} is not a forge under `forges` (known: {known})"
            )


def check_secrets(settings: Settings, environ: dict[str, str], where: _Located) -> None:
    """Every forge's token or App key (and webhook secret, when named) must be set in the
    environment."""
    for name, forge in settings.forges.items():
        keys: list[tuple[str, ...]] = [("token_env",), ("webhook_secret_env",)]
        if forge.app is not None:
            keys.append(("app", "private_key_env"))
        for key in keys:
            var = getattr(forge.app if key[0] == "app" else forge, key[-1])
            if var and not environ.get(var):
                path = ("forges", name, *key)
                raise ConfigError(
                    f"{where.source}:{where.line(path)}: {_dotted(path)}: environment variable "
                    f"{var} is not set (export {var}=..., or name another variable)"
                )


def find_config_file(path: str | os.PathLike[str] | None = None,
                     environ: dict[str, str] | None = None) -> Path | None:
    """The file to load: the argument, else $ORCHESTRATOR_CONFIG, else ./orchestrator.yml."""
    environ = dict(os.environ) if environ is None else environ
    if path:
        return Path(path)
    if environ.get(ENV_FILE):
        return Path(environ[ENV_FILE])
    default = Path(DEFAULT_FILE)
    return default if default.exists() else None


def load(path: str | os.PathLike[str] | None = None, *, environ: dict[str, str] | None = None,
         require_secrets: bool = True) -> Settings:
    """Load and validate the configuration; raise ConfigError with a one-line message.

    Without a file (none given, none in $ORCHESTRATOR_CONFIG or ./orchestrator.yml) the defaults
    apply, with environment overrides.
    """
    environ = dict(os.environ) if environ is None else environ
    file = find_config_file(path, environ)
    if file is None:
        where = _Located("", "(defaults)")
    else:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{file}: no such file (create it from "
                              "config/orchestrator.example.yml)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read: {exc}") from None
        where = _Located(text, str(file))
    data = where.data
    if not isinstance(data, dict):
        raise ConfigError(f"{where.source}:1: (top level): expected a mapping of sections, "
                          f"found {type(data).__name__}")
    overridden: dict[tuple[str, ...], str] = {}
    for env_path, value in _env_overrides(environ).items():
        _apply(data, env_path, value)
        overridden[env_path] = ENV_PREFIX + "__".join(p.upper() for p in env_path)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
        for env_path, var in overridden.items():
            if loc[: len(env_path)] == env_path:
                raise ConfigError(f"environment {var}: {_dotted(loc)}: {_describe(error)}"
                                  ) from None
        raise ConfigError(f"{where.source}:{where.line(loc)}: {_dotted(loc)}: "
                          f"{_describe(error)}") from None
    _check_references(settings, where)
    if require_secrets:
        check_secrets(settings, environ, where)
    return settings


def json_schema() -> dict[str, Any]:
    """The JSON Schema of orchestrator.yml, for editors."""
    schema = Settings.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "orchestrator.yml"
    return schema
