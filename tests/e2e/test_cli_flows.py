"""The commands a user types, as processes: demo, run, handle-event."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from runner.model import RunState
from runner.testing.demo import MAINTAINER, REPO, DemoWorld
from tests.support import ORCHESTRATOR, pulls_from

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_demo_prints_the_pull_request_and_both_outcomes(tmp_path: Path,
                                                      sandbox_image: str) -> None:
    proc = subprocess.run([ORCHESTRATOR, "demo", "--dir", str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "succeeded in iteration 1; pull request http://127.0.0.1:" in out
    assert "cancelled by @alice (this is taking too long)" in out
    # The review round: one change requested on the green PR, answered by a follow-up.
    assert "alice requested changes on PR #" in out and "calc.py` line 9" in out
    assert "review round: follow-up r-" in out and "succeeded, commit " in out
    assert "demo passed" in out


def test_run_works_on_one_issue_in_the_foreground(tmp_path: Path, sandbox_image: str) -> None:
    with DemoWorld(tmp_path, start_runner=False) as world:
        config = world.write_config(tmp_path / "orchestrator.yml")
        issue = world.open_issue(label=False)
        proc = subprocess.run([ORCHESTRATOR, "-c", str(config), "run", f"{REPO}#{issue}"],
                              capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        # progress as it happens: steps with durations, one line per tool call
        assert "▸ running (preparing took" in out and "$ python3 test_calc.py" in out
        assert "HTTP Request:" not in out and "{'" not in out
        run = world.run_for(issue)
        assert run is not None and run.state is RunState.SUCCEEDED
        assert f"run {run.id}: succeeded" in out and run.pr_url in out
        proc = subprocess.run([ORCHESTRATOR, "-c", str(config), "run", "not-a-ref"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "is not OWNER/REPO#NUMBER" in proc.stderr


@pytest.mark.parametrize("flavour", ["github", "forgejo"])
def test_handle_event_runs_a_labelled_issue_inside_a_ci_job(tmp_path: Path, sandbox_image: str,
                                                           flavour: str) -> None:
    with DemoWorld(tmp_path, flavour=flavour, start_runner=False) as world:  # type: ignore[arg-type]
        world.forge.add_webhook(REPO, None, world.secret)  # record deliveries: the CI event
        config = world.write_config(tmp_path / "orchestrator.yml")
        issue = world.open_issue()
        world.forge.wait_idle()
        labelled = next(d for d in world.forge.deliveries if d.json().get("action") in
                        ("labeled", "label_updated"))
        event_file = tmp_path / "event.json"
        event_file.write_bytes(labelled.body)
        proc = subprocess.run([ORCHESTRATOR, "-c", str(config), "handle-event",
                               "--event-name", "issues", "--event-file", str(event_file)],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "CI": "true"})
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        run = world.run_for(issue)
        assert run is not None and run.state is RunState.SUCCEEDED, out
        assert len(pulls_from(world.forge, f"orchestrator/issue-{issue}")) == 1
        # Another job (its own, empty store) gets a comment event for the labelled issue:
        # it must not start a second run.
        other_job = world.write_config(tmp_path / "other.yml",
                                       store={"sqlite": str(tmp_path / "other.db")},
                                       data_dir=str(tmp_path / "other-data"))
        comment = {"action": "created", "issue": {"number": issue},
                   "repository": {"full_name": REPO}, "comment": {"body": "thanks"},
                   "sender": {"login": MAINTAINER}}
        event_file.write_text(json.dumps(comment))
        proc = subprocess.run([ORCHESTRATOR, "-c", str(other_job), "handle-event",
                               "--event-name", "issue_comment", "--event-file",
                               str(event_file)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "starts nothing" in proc.stdout
        assert len(pulls_from(world.forge, f"orchestrator/issue-{issue}")) == 1
        assert not (tmp_path / "other-data" / "worktrees").exists()
        bad = tmp_path / "bad.json"
        bad.write_text("[]")
        proc = subprocess.run([ORCHESTRATOR, "-c", str(config), "handle-event",
                               "--event-name", "issues", "--event-file", str(bad)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "not an issue event payload" in proc.stderr
