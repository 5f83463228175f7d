"""``orchestrator doctor`` checks each GitHub App against the forge emulator: one line each."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli import cli
from runner.testing.forge import ForgeEmulator


def _doctor(tmp_path: Path, emu: ForgeEmulator, app_id: int, key: dict[str, str],
            env: dict[str, str]) -> tuple[int, list[str]]:
    path = tmp_path / "orchestrator.yml"
    key_lines = "".join(f"        {k}: {v}\n" for k, v in key.items())
    path.write_text(
        f"store:\n  sqlite: {tmp_path / 'state.db'}\nsandbox:\n  backend: local\n"
        f"forges:\n  gh:\n    kind: github\n    base_url: {emu.base_url}\n"
        f"    app:\n        app_id: {app_id}\n{key_lines}"
        "repos:\n  - {name: acme/app, forge: gh}\n  - {name: acme/other, forge: gh}\n")
    result = CliRunner().invoke(cli, ["-c", str(path), "doctor"], env=env)
    assert "Traceback" not in result.output
    return result.exit_code, [line for line in result.output.splitlines() if " gh app" in line]


@pytest.fixture
def emu(tmp_path: Path):  # type: ignore[no-untyped-def]
    with ForgeEmulator("github", tmp_path / "forge") as forge:
        forge.add_user("acme")
        forge.create_repo("acme/app")
        forge.create_repo("acme/other")
        yield forge


def test_doctor_says_where_the_app_is_missing_and_what_it_lacks(emu: ForgeEmulator,
                                                               tmp_path: Path) -> None:
    app = emu.add_app("orchestrator")
    emu.install_app(app, "acme/app")
    code, lines = _doctor(tmp_path, emu, app.id, {"private_key_env": "APP_KEY"},
                          {"APP_KEY": app.private_key_pem})
    assert code == 1
    assert [line.split()[0] for line in lines] == ["OK", "OK", "OK", "FAIL"], lines
    assert "acts as orchestrator[bot]" in lines[1]
    assert "not installed on acme/other" in lines[3] and "install it" in lines[3]

    weak = emu.add_app("weak", permissions={"contents": "write", "issues": "write",
                                            "metadata": "read"})
    emu.install_app(weak, "acme/app", "acme/other")
    code, lines = _doctor(tmp_path, emu, weak.id, {"private_key_env": "APP_KEY"},
                          {"APP_KEY": weak.private_key_pem})
    assert code == 1 and lines[2].startswith("FAIL")
    assert "lacks pull_requests: write, statuses: write, checks: read" in lines[2]


def test_doctor_names_an_unreadable_key_and_skips_what_needs_it(emu: ForgeEmulator,
                                                                tmp_path: Path) -> None:
    app = emu.add_app("orchestrator")
    code, lines = _doctor(tmp_path, emu, app.id,
                          {"private_key_file": str(tmp_path / "missing.pem")}, {})
    assert code == 1 and len(lines) == 4 and all(line.startswith("FAIL") for line in lines)
    assert "cannot read" in lines[0] and "missing.pem" in lines[0]
    assert "skipped" in lines[1] and "skipped" in lines[2]

    wrong = tmp_path / "other.pem"
    wrong.write_text(emu.add_app("someone-else").private_key_pem)
    code, lines = _doctor(tmp_path, emu, app.id, {"private_key_file": str(wrong)}, {})
    assert lines[0].startswith("OK") and lines[1].startswith("FAIL")
    assert "refused the App's JWT" in lines[1] and "other.pem" in lines[1]
