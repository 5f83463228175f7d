"""The command line as a user meets it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli import cli
from runner.model import RunState
from runner.store.sqlite import SqliteStore
from tests.support import free_port


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def test_help_lists_the_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "--help"], capture_output=True,
                          text=True, check=True)
    for command in ("config", "doctor", "runs", "kill", "resume", "serve", "run", "logs",
                    "handle-event", "demo", "init"):
        assert f"  {command} " in proc.stdout


def test_version() -> None:
    code, out = invoke("--version")
    assert code == 0 and "orchestrator, version" in out


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "orchestrator.yml"
    path.write_text(f"store:\n  sqlite: {tmp_path / 'state.db'}\nsandbox:\n  backend: local\n")
    return path


def test_runs_table_and_json(configured: Path, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    code, out = invoke("-c", str(configured), "runs")
    assert code == 0 and "no runs yet" in out
    run, _ = store.create_run("acme/widgets", 42, trigger_actor="alice")
    done, _ = store.create_run("acme/widgets", 43)
    store.transition(done.id, RunState.QUEUED, RunState.FAILED, actor="x", reason="boom")
    code, out = invoke("-c", str(configured), "runs")
    assert code == 0
    assert run.id in out and "acme/widgets#42" in out and "queued" in out
    assert "boom" in out
    code, out = invoke("-c", str(configured), "runs", "--state", "active", "--json")
    assert code == 0 and run.id in out and done.id not in out


def test_kill_and_kill_all(configured: Path, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    run, _ = store.create_run("acme/widgets", 1)
    other, _ = store.create_run("acme/widgets", 2)
    code, out = invoke("-c", str(configured), "kill", run.id, "--reason", "wrong idea")
    assert code == 0, out
    kill = store.kill_request(run.id)
    assert kill is not None and kill.reason == "wrong idea"
    code, out = invoke("-c", str(configured), "kill", "--all")
    assert code == 0 and "dispatch paused" in out
    assert store.kill_request(other.id) is not None
    assert store.paused() is not None
    code, out = invoke("-c", str(configured), "resume")
    assert code == 0 and "dispatch resumed" in out and store.paused() is None


def test_killing_a_finished_run_is_refused(configured: Path, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    run, _ = store.create_run("acme/widgets", 1)
    store.transition(run.id, RunState.QUEUED, RunState.CANCELLED, actor="x")
    code, out = invoke("-c", str(configured), "kill", run.id)
    assert code == 1
    assert f"run {run.id} already cancelled; nothing to kill" in out
    code, out = invoke("-c", str(configured), "kill", "nonsense")
    assert code == 2 and "is not a run id" in out
    code, out = invoke("-c", str(configured), "kill", "r-ffffffffffff")
    assert code == 1 and "no run 'r-ffffffffffff'" in out


def test_doctor_fails_when_redis_is_configured_but_down(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    port = free_port()  # nothing listens there
    path = tmp_path / "orchestrator.yml"
    path.write_text(f"store:\n  redis: redis://127.0.0.1:{port}/0\nsandbox:\n  backend: local\n")
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "-c", str(path), "doctor"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    fail_lines = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fail_lines) == 1, proc.stdout
    assert "store" in fail_lines[0]
    assert f"redis://127.0.0.1:{port}/0" in fail_lines[0]
    assert "start it, or fix store.redis" in fail_lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_doctor_passes_with_a_working_local_setup(configured: Path) -> None:
    code, out = invoke("-c", str(configured), "doctor")
    assert code == 0, out
    assert out.count("OK") >= 3


def test_handle_event_never_takes_a_pull_request_for_an_issue(tmp_path: Path) -> None:
    import json

    event = tmp_path / "event.json"
    event.write_text(json.dumps({
        "action": "created", "repository": {"full_name": "acme/w"},
        "issue": {"number": 9, "pull_request": {"url": "https://example/pulls/9"}},
        "comment": {"body": "/kill"}, "sender": {"login": "alice"}}))
    code, out = invoke("handle-event", "--event-name", "issue_comment", "--event-file",
                       str(event))
    assert code == 0 and "ignoring a comment on a pull request" in out
