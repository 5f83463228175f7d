"""A kill lands in every state without waiting for the slow thing in flight (a fetch, a push,
the agent's command, CI, the reviewer), and nothing is written to the forge after it but the
kill's own record."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.testing import forge_git
from runner.testing.demo import REPO
from tests.e2e.kill_scenarios import HUNG_LOOK, STATES, Writes, hold_and_kill, scenario
from tests.support import pulls_from, worktrees_left

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.mark.parametrize("case", [*STATES, HUNG_LOOK], ids=[*map(str, STATES), HUNG_LOOK])
def test_a_kill_lands_in_every_state_and_nothing_is_written_after_it(
        case: RunState | str, tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    held = scenario(case)
    state = held.state
    writes = Writes()
    with held.world(tmp_path) as world:
        held.arrange(world)
        world.forge.observers.append(writes.observe)
        run, _ = hold_and_kill(world, held, docker_client, writes)
        assert run.state is RunState.CANCELLED
        assert run.killed_by == "alice" and run.reason == "enough"
        killed = [e for e in world.store.events(run.id, limit=1000) if e.kind == "killed"]
        assert killed and killed[0].data["state"] == str(state)
        # Whatever the kill cut short stays undone: a push that was in flight never reached
        # the forge, and no PR, review or status followed; a PR opened before stays a draft.
        time.sleep(2)  # anything a stalled step would still write, it writes by now
        assert writes.not_the_kills_own() == []
        pulls = pulls_from(world.forge, run.branch)
        if state in (RunState.QUEUED, RunState.PREPARING, RunState.RUNNING, RunState.PUSHING):
            assert pulls == []
            assert run.branch not in forge_git.refs(world.forge.repo(REPO).git_dir)
        else:
            assert len(pulls) == 1
            pull = world.forge.issue(REPO, pulls[0]).pull
            assert pull is not None and pull.draft
        assert worktrees_left(Path(world.settings_dict()["data_dir"])) == [] or \
            state is RunState.QUEUED  # the blocker's worktree is still in use
