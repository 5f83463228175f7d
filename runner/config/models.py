"""The sections of ``orchestrator.yml`` as typed settings (pydantic models): ``Settings``."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from runner.config.values import (
    Duration,
    EnvName,
    Permission,
    Section,
    Size,
    parse_duration,
    parse_size,
)


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
