"""Loading ``orchestrator.yml`` into typed settings.

Every mistake is reported as one line that names the file, the line, the key, what was found
and what is allowed, e.g. ``orchestrator.yml:12: sandbox.memory: '2 gigs' is not a size (try
'2g')``. ``ORCHESTRATOR_<SECTION>__<KEY>`` environment variables override the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from runner.config.models import Settings
from runner.config.values import DEFAULT_FILE, ENV_FILE, ENV_PREFIX, ConfigError


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
