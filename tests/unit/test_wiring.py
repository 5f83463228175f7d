"""Which gate profiles the wired runner applies: gates_config, the environment, the bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.config import Settings
from runner.paths import CONFIG_DIR
from runner.wiring import WiringError, build

CUSTOM = """
profiles:
  tiny:
    extends: minimal
    commands:
      lint: {run: "echo tiny-lint", fast: true}
"""


def settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings.model_validate({
        "data_dir": str(tmp_path / "data"), "sandbox": {"backend": "local"},
        "store": {"sqlite": str(tmp_path / "state.db")}, "review": {"enabled": False},
        **extra})


def custom_gates(tmp_path: Path) -> Path:
    path = tmp_path / "gates.yml"
    path.write_text((CONFIG_DIR / "gates.yml").read_text() + CUSTOM.replace(
        "profiles:\n", "", 1))
    return path


def test_the_bundled_profiles_by_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ORCHESTRATOR_GATES_CONFIG", raising=False)
    gates = build(settings(tmp_path)).steps.services.gates
    assert "standard" in gates.profiles and "tiny" not in gates.profiles


def test_gates_config_and_the_environment_name_the_file(tmp_path: Path, monkeypatch) -> None:
    path = custom_gates(tmp_path)
    gates = build(settings(tmp_path, gates_config=str(path))).steps.services.gates
    assert gates.profile("tiny").fast_commands()["lint"].run == "echo tiny-lint"
    monkeypatch.setenv("ORCHESTRATOR_GATES_CONFIG", str(path))
    assert "tiny" in build(settings(tmp_path)).steps.services.gates.profiles


def test_a_missing_gates_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WiringError, match=r"gate profiles: .*nowhere\.yml: no such file"):
        build(settings(tmp_path, gates_config=str(tmp_path / "nowhere.yml")))
