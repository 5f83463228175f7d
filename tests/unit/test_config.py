"""orchestrator.yml: every mistake is one line naming file, line and key, with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from runner import config
from runner.cli import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "orchestrator.example.yml"
SECRETS = {"GITHUB_TOKEN": "t1", "GITHUB_WEBHOOK_SECRET": "s1", "FORGEJO_TOKEN": "t2",
           "GITHUB_APP_KEY": "pem"}

GOOD = """\
forges:
  gh:
    kind: github
    token_env: GH_TOKEN
repos:
  - name: acme/widgets
    forge: gh
"""

APP = """\
forges:
  gh:
    kind: github
    app:
      app_id: 12
      private_key_env: APP_KEY
repos:
  - name: acme/widgets
    forge: gh
"""


def test_a_github_app_instead_of_a_token_passes(tmp_path: Path) -> None:
    code, out = check(tmp_path, APP, {"APP_KEY": "pem"})
    assert code == 0, out
    settings = config.load(tmp_path / "orchestrator.yml", environ={"APP_KEY": "pem"})
    assert settings.forges["gh"].app is not None
    assert settings.forges["gh"].app.app_id == "12" and settings.forges["gh"].token_env is None


def check(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    path = tmp_path / "orchestrator.yml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["config", "check", str(path)],
                                env={"GH_TOKEN": "x", **(env or {})})
    return result.exit_code, result.output


def test_example_explains_every_key_and_loads() -> None:
    settings = config.load(EXAMPLE, environ=SECRETS)
    assert settings.repos[0].name == "acme/widgets"
    assert settings.forges["codeberg"].kind == "forgejo"
    text = EXAMPLE.read_text()
    for section, model in config.Settings.model_fields.items():
        assert f"{section}:" in text, f"example does not show {section}"
        annotation = model.annotation
        if isinstance(annotation, type) and issubclass(annotation, config.Section):
            for key in annotation.model_fields:
                assert f"{key}:" in text, f"example does not explain {section}.{key}"


def test_example_validates_against_the_published_schema() -> None:
    schema = config.json_schema()
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(EXAMPLE.read_text()))


def test_good_file_passes(tmp_path: Path) -> None:
    code, out = check(tmp_path, GOOD)
    assert code == 0, out
    assert "OK" in out and "1 repo" in out


@pytest.mark.parametrize(("name", "text", "env", "expected"), [
    ("bad yaml", "forges: [\n  gh\n", {}, "orchestrator.yml:3: not valid YAML"),
    ("unknown key", GOOD + "sandbox:\n  memroy: 2g\n", {},
     "orchestrator.yml:9: sandbox.memroy: unknown key (allowed here: backend,"),
    ("wrong type", GOOD + "limits:\n  max_iterations: three\n", {},
     "orchestrator.yml:9: limits.max_iterations: 'three' is not a whole number"),
    ("bad size", GOOD + "sandbox:\n  memory: 2 gigs\n", {},
     "orchestrator.yml:9: sandbox.memory: '2 gigs' is not a size (try '2g')"),
    ("missing env var for a token", GOOD.replace("GH_TOKEN", "NOT_SET_TOKEN"), {},
     "orchestrator.yml:4: forges.gh.token_env: environment variable NOT_SET_TOKEN is not set"),
    ("unknown forge kind", GOOD.replace("kind: github", "kind: gitlab"), {},
     "orchestrator.yml:3: forges.gh.kind: 'gitlab' is not allowed (allowed: 'github' or "
     "'forgejo')"),
    ("repo without forge", GOOD.replace("    forge: gh\n", ""), {},
     "orchestrator.yml:6: repos[0].forge: required key is missing"),
    ("repo names an unknown forge", GOOD.replace("forge: gh", "forge: gitea"), {},
     "orchestrator.yml:7: repos[0].forge: 'gitea' is not a forge under `forges` (known: gh)"),
    ("negative limit", GOOD + "limits:\n  max_concurrent: -2\n", {},
     "orchestrator.yml:9: limits.max_concurrent: -2 is out of range (must be > 0)"),
    ("no spend budget", GOOD + "limits:\n  daily_cost_usd: 0\n", {},
     "orchestrator.yml:9: limits.daily_cost_usd: 0 is out of range (must be > 0"),
    ("bad duration", GOOD + "limits:\n  poll_interval: soon\n", {},
     "orchestrator.yml:9: limits.poll_interval: 'soon' is not a duration"),
    ("key twice", GOOD + "yolo: true\nyolo: false\n", {},
     "orchestrator.yml:9: yolo: key appears twice"),
    ("not a mapping", "- a\n- b\n", {}, "orchestrator.yml:1: (top level): expected a mapping"),
    ("bad env override", GOOD, {"ORCHESTRATOR_SANDBOX__CPUS": "lots"},
     "environment ORCHESTRATOR_SANDBOX__CPUS: sandbox.cpus: 'lots' is not a number"),
    ("retries as a count", GOOD + "agent:\n  max_retries: 5\n", {},
     "orchestrator.yml:8: agent: max_retries is gone: a model provider's outage is now "
     "waited out for a time, agent.outage_timeout"),
    ("threshold above 1", GOOD + "review:\n  threshold: 1.5\n", {},
     "orchestrator.yml:9: review.threshold: 1.5 is out of range (must be <= 1"),
    ("ssh git_url", GOOD.replace("kind: github", "kind: github\n    git_url: git@host:acme"), {},
     "orchestrator.yml:4: forges.gh.git_url: 'git@host:acme' is not an https URL"),
    ("two App keys", APP.replace("app_id: 12", "app_id: 12\n      private_key_file: k.pem"),
     {"APP_KEY": "pem"}, "forges.gh.app: set exactly one of private_key_env and "
     "private_key_file"),
    ("App key not set", APP, {}, "orchestrator.yml:6: forges.gh.app.private_key_env: "
     "environment variable APP_KEY is not set"),
    ("App on Forgejo", APP.replace("kind: github", "kind: forgejo"), {"APP_KEY": "pem"},
     "forges.gh: app: GitHub Apps exist only on GitHub"),
    ("no credential", GOOD.replace("    token_env: GH_TOKEN\n", ""), {},
     "forges.gh: set token_env (or, on GitHub, app)"),
])
def test_bad_configuration_is_one_line_with_exit_2(tmp_path: Path, name: str, text: str,
                                                   env: dict[str, str], expected: str) -> None:
    code, out = check(tmp_path, text, env)
    assert code == 2, out
    assert "Traceback" not in out
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"{name}: expected one line, got {out!r}"
    assert expected in lines[0], f"{name}: {lines[0]!r}"


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.yml"
    path.write_text(GOOD + "sandbox:\n  memory: 2 gigs\n")
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "config", "check", str(path)],
                          capture_output=True, text=True, env={"GH_TOKEN": "x", "PATH": ""})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}:9: sandbox.memory: '2 gigs' is not a size (try '2g')" in proc.stderr


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "check", str(tmp_path / "nope.yml")])
    assert result.exit_code == 2
    assert "no such file (create it from config/orchestrator.example.yml)" in result.output


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "o.yml"
    path.write_text(GOOD + "sandbox:\n  memory: 1g\n")
    settings = config.load(path, environ={"GH_TOKEN": "x", "ORCHESTRATOR_SANDBOX__MEMORY": "4g",
                                          "ORCHESTRATOR_LIMITS__MAX_CONCURRENT": "7",
                                          "ORCHESTRATOR_API_TOKEN": "not-an-override"})
    assert settings.sandbox.memory == 4 * 1024**3
    assert settings.limits.max_concurrent == 7


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = config.load(environ={})
    assert settings.store.sqlite == ".orchestrator/state.db"
    assert settings.labels.kill == "orchestrator:kill"
    assert settings.review.threshold == 0.9


def test_schema_command_prints_json_schema() -> None:
    result = CliRunner().invoke(cli, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    # written forms of sizes are accepted by the schema, so editors do not flag them
    jsonschema.validate({"sandbox": {"memory": "2g"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"sandbox": {"memroy": "2g"}}, schema)


@given(st.integers(min_value=1, max_value=4096), st.sampled_from(["k", "m", "g", "K", "M", "G"]))
def test_sizes_parse_with_their_unit(number: int, unit: str) -> None:
    factor = {"k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]
    assert config.parse_size(f"{number}{unit}") == number * factor
    assert config.parse_size(f"{number}{unit}iB") == number * factor


@given(st.integers(min_value=1, max_value=10**6))
def test_durations_parse(n: int) -> None:
    assert config.parse_duration(f"{n}m") == n * 60
    assert config.parse_duration(f"{n}s") == n
    assert config.parse_duration(n) == n

