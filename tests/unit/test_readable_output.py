"""What people read reads like a product: each test here failed on the old output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.model import Run, RunState
from runner.run.status import render
from runner.store.sqlite import SqliteStore

LONG_REASON = ("the agent stopped after 20 turns without finishing: it kept editing calc.py "
               "and running the tests, which failed each time with the same AssertionError")


@pytest.fixture
def configured(tmp_path: Path) -> Path:
    path = tmp_path / "orchestrator.yml"
    path.write_text(f"store:\n  sqlite: {tmp_path / 'state.db'}\nsandbox:\n  backend: local\n")
    return path


def cli(config: Path, *args: str, columns: int = 80) -> str:
    """The command's output as a user's terminal of ``columns`` would show it."""
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run([sys.executable, "-m", "runner.cli", "-c", str(config), *args],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_runs_at_80_columns_never_cuts_the_run_id(configured: Path, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    run, _ = store.create_run("acme/a-repository-with-a-long-name", 4242, trigger_actor="alice")
    store.transition(run.id, RunState.QUEUED, RunState.FAILED, actor="x", reason=LONG_REASON)
    out = cli(configured, "runs")
    lines = [line for line in out.splitlines() if line.strip()]
    assert all(len(line) <= 80 for line in lines), out
    row = next(line for line in lines if "failed" in line)
    assert run.id in row, f"the id is cut:\n{out}"
    assert sum(1 for line in lines if "the agent" in line or "AssertionError" in line) <= 1


def _a_run_with_tool_calls(tmp_path: Path) -> str:
    store = SqliteStore(tmp_path / "state.db")
    run, _ = store.create_run("acme/app", 1)
    store.transition(run.id, RunState.QUEUED, RunState.PREPARING, actor="runner")
    store.transition(run.id, RunState.PREPARING, RunState.RUNNING, actor="runner")
    output = "Traceback (most recent call last):\n" + "  File 'x.py', line 1\n" * 30 + \
        "AssertionError: add(2, 3) is -1, expected 5"
    store.append_event(run.id, "agent.tool", {
        "turn": 1, "tool": "bash", "input": {"command": "python3 test_calc.py"},
        "exit_code": 1, "output": output, "seconds": 0.42}, actor="agent")
    store.append_event(run.id, "agent.tool", {
        "turn": 2, "tool": "editor", "exit_code": None, "is_error": False, "seconds": 0.01,
        "input": {"command": "str_replace", "path": "calc.py", "old_str": "return a - b",
                  "new_str": "return a + b"}, "output": "edited"}, actor="agent")
    store.append_event(run.id, "gates", {"stage": "pre-push", "results": [
        {"gate": "diff-size", "passed": False, "message": "412 lines, at most 400",
         "expected": 400, "actual": 412}]})
    return run.id


def test_logs_show_one_line_per_tool_call_and_steps(configured: Path, tmp_path: Path) -> None:
    run_id = _a_run_with_tool_calls(tmp_path)
    out = cli(configured, "logs", run_id, columns=120)
    assert "$ python3 test_calc.py" in out and "exit 1 · 0.4s" in out
    assert "edit calc.py (replace 1 line with 1 line)" in out
    assert "gates (pre-push): 0 passed, 1 failed: diff-size (412 lines, at most 400)" in out
    assert "▸ running" in out and "(preparing took" in out
    assert "Traceback" not in out and "{'gate'" not in out and "'passed'" not in out
    narrow = cli(configured, "logs", run_id, columns=80)
    assert all(len(line) <= 80 for line in narrow.splitlines()), narrow
    assert "$ python3 test_calc.py" in narrow
    full = cli(configured, "logs", "--full", run_id)
    assert "AssertionError: add(2, 3) is -1, expected 5" in full
    assert "- return a - b" in full and "+ return a + b" in full


def _killed(by: str, reason: str = "wrong idea") -> Run:
    return Run(id="r-0123456789ab", repo="acme/app", issue=1, state=RunState.CANCELLED,
               killed_by=by, reason=reason)


def test_the_kill_comment_names_who_acted_without_a_false_mention() -> None:
    for actor, named in (("cli:sam", "`sam` from the command line"),
                         ("dashboard:ops_token", "the dashboard (token `ops_token`)")):
        text = render(_killed(actor), last_active=RunState.RUNNING, max_iterations=3,
                      skip_gates=False, yolo_note="", link="")
        assert "@" not in text, text
        assert named in text
    by_login = render(_killed("alice"), last_active=RunState.RUNNING, max_iterations=3,
                      skip_gates=False, yolo_note="", link="")
    assert "Killed by @alice" in by_login


def test_after_a_kill_by_label_the_issue_says_how_to_run_again() -> None:
    text = render(_killed("alice", "orchestrator:kill label added by alice"),
                  last_active=RunState.RUNNING, max_iterations=3, skip_gates=False,
                  yolo_note="", link="")
    assert "remove the `orchestrator:kill` label, then add `orchestrator` again" in text
    by_comment = render(_killed("alice", "/kill by alice"), last_active=RunState.RUNNING,
                        max_iterations=3, skip_gates=False, yolo_note="", link="")
    assert "remove the" not in by_comment


def test_a_broken_configuration_is_reported_once_by_the_doctor(tmp_path: Path) -> None:
    bad = tmp_path / "orchestrator.yml"
    bad.write_text("store:\n  sqlite: 12\nlimits:\n  max_concurrent: -1\n")
    done = subprocess.run([sys.executable, "-m", "runner.cli", "-c", str(bad), "doctor"],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert done.returncode == 1
    out = done.stdout + done.stderr
    assert out.count("is not a string") == 1, out
    assert "needs a configuration that loads (see above)" in out


def test_an_unreachable_redis_message_reads_right() -> None:
    from runner.store.redis_errors import translated

    class NoUrl:
        @translated
        def ping(self) -> None:
            import redis

            raise redis.ConnectionError("refused")

    with pytest.raises(Exception, match=r"^the configured Redis does not answer"):
        NoUrl().ping()


def test_the_demo_quiets_third_party_loggers() -> None:
    import logging

    from rich.console import Console

    from runner.cli_output import setup_logging

    setup_logging(Console(stderr=True), verbose=False)
    for name in ("httpx", "httpx2", "httpcore", "anthropic", "urllib3", "docker", "any.lib"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    for name in ("orchestrator.run", "runner.workspace", "gates.runner"):
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name
