"""``orchestrator.yml`` into typed settings.

Every mistake is reported as one line that names the file, the line, the key, what was found
and what is allowed, e.g. ``orchestrator.yml:12: sandbox.memory: '2 gigs' is not a size (try
'2g')``. ``ORCHESTRATOR_<SECTION>__<KEY>`` environment variables override the file.

The package: ``values`` (sizes, durations, the error), ``models`` (the sections and
``Settings``), ``loading`` (the file, the environment overrides, the messages).
"""

from __future__ import annotations

from runner.config.loading import check_secrets, find_config_file, json_schema, load
from runner.config.models import (
    AgentConfig,
    ForgeConfig,
    GatewayConfig,
    GitHubAppConfig,
    LabelsConfig,
    LimitsConfig,
    Price,
    RepoConfig,
    ReviewConfig,
    SandboxConfig,
    ServerConfig,
    Settings,
    StoreConfig,
)
from runner.config.values import (
    DEFAULT_FILE,
    ENV_FILE,
    ENV_PREFIX,
    ConfigError,
    Duration,
    EnvName,
    Permission,
    Section,
    Size,
    parse_duration,
    parse_size,
)

__all__ = [
    "DEFAULT_FILE",
    "ENV_FILE",
    "ENV_PREFIX",
    "AgentConfig",
    "ConfigError",
    "Duration",
    "EnvName",
    "ForgeConfig",
    "GatewayConfig",
    "GitHubAppConfig",
    "LabelsConfig",
    "LimitsConfig",
    "Permission",
    "Price",
    "RepoConfig",
    "ReviewConfig",
    "SandboxConfig",
    "Section",
    "ServerConfig",
    "Settings",
    "Size",
    "StoreConfig",
    "check_secrets",
    "find_config_file",
    "json_schema",
    "load",
    "parse_duration",
    "parse_size",
]
