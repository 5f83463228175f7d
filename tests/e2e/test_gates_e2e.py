"""Quality gates end to end: secrets never leave the runner, the AI reviewer holds the PR,
the 50% rule refuses what is too large."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.config import Settings
from runner.model import RunState
from runner.sizing import FORCE_LABEL, TOO_LARGE_LABEL
from runner.testing.demo import BUG, MAINTAINER, READER, REPO, DemoWorld, fixing_agent
from runner.testing.llm import Reply, Request
from runner.wiring import build
from tests.support import pulls_from

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Split so that no scanner flags this file itself.
SECRETS = {
    "aws": "AKIA" + "Z7QX4J2M8KDW3PLB",
    "github": "ghp_" + "k3J9dLq2Zx7Vb1Nw8Rt5Yu4Io6Pa0Sd2Fg7H",
    "anthropic": "sk-ant-api03-" + "Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nM3qW5eR7tY9uI0oP-aSdF_gHjK",
}


def planting_agent(secret: str) -> object:
    """Fixes the bug, and also writes a credential into the repository."""
    path, old, new = BUG

    def policy(request: Request) -> Reply:
        steps = [
            Reply.edit("str_replace", path, "Fixing the bug.", old_str=old, new_str=new),
            Reply.bash(f"printf 'API_KEY = \"{secret}\"\\n' > settings.py", "Adding settings."),
            Reply.finish("Fixed add() and added settings"),
        ]
        if "what failed last time" in request.first_user_text():
            steps = steps[1:]  # the worktree keeps the fix; plant again regardless
        return steps[min(request.turn, len(steps) - 1)]

    return policy


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_a_planted_secret_blocks_the_push(tmp_path: Path, sandbox_image: str, kind: str) -> None:
    secret = SECRETS[kind]
    with DemoWorld(tmp_path, agent=planting_agent(secret),
                   settings={"limits": {"max_iterations": 2}}) as world:
        issue = world.open_issue()
        run = world.wait_finished(issue)
        assert run.state is RunState.FAILED
        assert "secrets" in run.reason
        branch = f"orchestrator/issue-{issue}"
        assert world.forge.branch_sha(REPO, branch) is None, "the branch reached the forge"
        assert pulls_from(world.forge, branch) == []
        events = world.store.events(run.id, limit=10000)
        gates = [e for e in events if e.kind == "gates"]
        assert gates and all(
            not next(r for r in e.data["results"] if r["gate"] == "secrets")["passed"]
            for e in gates)
        finding = next(r for r in gates[0].data["results"] if r["gate"] == "secrets")
        assert "settings.py:1" in finding["message"] + finding["details"] + finding["actual"]
        for event in events:
            assert secret not in json.dumps(event.data), f"{event.kind} holds the secret"
        for comment in world.forge.issue(REPO, issue).comments:
            assert secret not in comment.body


def reviewer_wanting_a_test() -> object:
    """Requests changes until the diff adds a test of add(); then approves."""

    def policy(request: Request) -> Reply:
        diff = request.first_user_text()
        if "assert add(-1, 1) == 0" in diff:
            return Reply.text(json.dumps({"verdict": "approve", "confidence": 0.97,
                                          "summary": "Fixed, with a test.", "findings": []}))
        return Reply.text(json.dumps({
            "verdict": "request_changes", "confidence": 0.9,
            "summary": "The fix is right but nothing tests negative numbers.",
            "findings": [{"path": "calc.py", "line": 6, "severity": "major",
                          "message": "add a test for add(-1, 1)"}]}))

    return policy


def agent_that_listens() -> object:
    first = fixing_agent()

    def policy(request: Request) -> Reply:
        if "what failed last time" not in request.first_user_text():
            return first(request)  # type: ignore[operator]
        if request.turn == 0:
            return Reply.bash("printf 'assert add(-1, 1) == 0\\n' >> test_calc.py",
                              "Adding the test the reviewer asked for.")
        return Reply.finish("Added a test for negative numbers")

    return policy


def test_reviewer_requests_changes_then_approves(tmp_path: Path, sandbox_image: str) -> None:
    with DemoWorld(tmp_path, agent=agent_that_listens(),
                   reviewer=reviewer_wanting_a_test()) as world:  # type: ignore[arg-type]
        issue = world.open_issue()
        run = world.wait_finished(issue)
        assert run.state is RunState.SUCCEEDED, run.reason
        assert run.iteration == 2
        reviews = [e.data for e in world.store.events(run.id, limit=10000) if e.kind == "review"]
        assert [r["verdict"] for r in reviews] == ["request_changes", "approve"]
        pr = world.forge.issue(REPO, run.pr_number or 0)
        assert pr.pull is not None and not pr.pull.draft
        reviews_posted = pr.pull.reviews
        assert [r.state for r in reviews_posted] == ["COMMENTED", "COMMENTED"]
        assert "requests changes" in reviews_posted[0].body
        assert reviews_posted[0].comments[0]["path"] == "calc.py"
        assert "approves" in reviews_posted[1].body
        statuses = world.forge.state.latest_statuses(world.forge.repo(REPO), pr.pull.head_sha)
        assert {s.context: s.state for s in statuses}["orchestrator/ai-review"] == "success"


LARGE = "## Context Estimate\n\nTotal estimated: 150,000 tokens\n\nRewrite everything."


def test_an_oversized_issue_is_refused_and_force_overrides(tmp_path: Path,
                                                           sandbox_image: str) -> None:
    with DemoWorld(tmp_path) as world:
        issue = world.open_issue(body=LARGE)
        run = world.wait_finished(issue)
        assert run.state is RunState.FAILED and "too large" in run.reason
        labels = [label.name for label in world.forge.issue(REPO, issue).labels]
        assert TOO_LARGE_LABEL in labels
        comments = [c.body for c in world.forge.issue(REPO, issue).comments]
        assert any("too large for one agent run" in c for c in comments)
        # force from someone without write permission does not count
        world.forge.label(REPO, issue, FORCE_LABEL, as_user=READER)
        world.forge.unlabel(REPO, issue, "orchestrator", as_user=MAINTAINER)
        world.forge.label(REPO, issue, "orchestrator", as_user=MAINTAINER)
        second = world.wait_for(lambda: (r := world.run_for(issue)) and r.id != run.id and r,
                                60, "a second run")
        second = world.wait_finished(issue)
        assert second.state is RunState.FAILED and "too large" in second.reason
        # force from a writer does
        world.forge.unlabel(REPO, issue, FORCE_LABEL, as_user=MAINTAINER)
        world.forge.label(REPO, issue, FORCE_LABEL, as_user=MAINTAINER)
        world.forge.unlabel(REPO, issue, "orchestrator", as_user=MAINTAINER)
        world.forge.label(REPO, issue, "orchestrator", as_user=MAINTAINER)
        world.wait_for(lambda: (r := world.run_for(issue)) and r.id not in (run.id, second.id),
                       60, "a third run")
        third = world.wait_finished(issue)
        assert third.state is RunState.SUCCEEDED, third.reason


def test_a_label_added_after_the_trigger_looked_counts(tmp_path: Path,
                                                       sandbox_image: str) -> None:
    # The trigger reads the issue, then its label events: a force label added between that
    # read and the run's start must still count (it did not, when runs kept the trigger's
    # labels, and a forced run failed as too large about one time in twenty).
    with DemoWorld(tmp_path, start_runner=False) as world:
        issue = world.open_issue(body=LARGE)
        runner = build(Settings.model_validate(world.settings_dict()), worker="early")
        try:
            runner.controller.reconcile(f"{REPO}#{issue}")  # queues the run, starts nothing
        finally:
            runner.controller.stop()
        first = world.store.latest_run(REPO, issue)
        assert first is not None and first.state is RunState.QUEUED
        world.forge.label(REPO, issue, FORCE_LABEL, as_user=MAINTAINER)
        world.start_runner_process()
        run = world.wait_finished(issue)
        assert run.id == first.id
        assert run.state is RunState.SUCCEEDED, run.reason
