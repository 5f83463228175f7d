"""The runner as a GitHub App, end to end: installation tokens that live 60 s are renewed
through a whole run (label to green PR, git included), and the App's own comments, known by
its ``<slug>[bot]`` login, never steer or stop a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.model import RunState
from runner.testing.demo import CI_CONTEXT, REPO, TEST_COMMAND, DemoWorld

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_a_run_as_an_app_with_60s_tokens_renews_them(tmp_path: Path,
                                                       sandbox_image: str) -> None:
    with DemoWorld(tmp_path, flavour="github", app_token_lifetime=60) as world:
        app = world.app
        assert world.runner.controller.rules.bot_logins == frozenset({"orchestrator[bot]"})
        # A CI of 35 s: the run outlives the first token's renewal point (half its life).
        world.forge.configure_ci(REPO, f"sleep 35; {TEST_COMMAND}", context=CI_CONTEXT)
        issue = world.open_issue()
        # The App itself quotes a /kill (no hidden marker): its own words never stop the run.
        world.forge.comment(REPO, issue, "/kill", as_user=app.bot.login)
        run = world.wait_finished(issue, timeout=240)
        assert run.state is RunState.SUCCEEDED, run.reason
        pr = world.forge.issue(REPO, run.pr_number or 0)
        assert pr.pull is not None and not pr.pull.draft
        assert pr.user.login == "orchestrator[bot]"  # opened by the App
        pushed = [e for e in world.store.events(run.id, limit=1000) if e.kind == "pushed"]
        assert pushed
        # Every request and git operation carried a live token: none was refused.
        refused = [x for x in world.forge.exchanges if x.status == 401]
        assert refused == []
        assert run.updated_at - run.created_at > 35
        assert world.forge.apps.tokens_made >= 2  # renewed, before it expired
