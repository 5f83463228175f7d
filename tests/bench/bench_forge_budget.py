"""scripts/bench forge-budget [IDLE_SECONDS]: forge requests that spend GitHub's budget.

- ``requests_per_run``: one run, label to green PR, with a 60 s CI and webhooks on;
- ``requests_per_run_polling``: the same with no webhooks and ``poll_interval`` 60 s;
- ``idle_requests_per_hour``: a runner watching 20 repositories with nothing to do, for
  IDLE_SECONDS (default 180), scaled to an hour;
- ``waiting_pull_requests_per_hour`` (webhooks on) and ``_polling`` (no webhooks): a run
  that succeeded and whose PR waits for a human review, the issue still labelled, nothing
  happening, for IDLE_SECONDS with ``poll_interval`` 60 s, scaled to an hour.

Counted at the emulator (GitHub flavour): every API request the runner makes except the
304s of conditional reads, which GitHub does not charge.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runner.model import RunState
from runner.testing.demo import CI_CONTEXT, MAINTAINER, REPO, SAMPLE_FILES, TEST_COMMAND, DemoWorld
from tests.bench.common import report

CI_SECONDS = 60
IDLE_REPOS = 20


def one_run(webhooks: bool) -> dict[str, int]:
    """Budget-spending requests of one run from label to its end."""
    settings: dict[str, Any] = {"limits": {"poll_interval": "60s", "ci_timeout": "300s"}}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, \
            DemoWorld(Path(tmp), settings=settings) as world:
        world.forge.configure_ci(REPO, f"sleep {CI_SECONDS}; {TEST_COMMAND}",
                                 context=CI_CONTEXT, timeout=CI_SECONDS + 60)
        if not webhooks:
            world.forge.repo(REPO).hooks.clear()
        time.sleep(1.0)  # the runner's first poll is done
        before, free = world.forge.budget.charged, world.forge.budget.not_modified
        issue = world.open_issue()
        run = world.wait_finished(issue, timeout=CI_SECONDS * 3 + 240)
        if run.state is not RunState.SUCCEEDED:
            raise SystemExit(f"the run did not succeed: {run.state.value}: {run.reason}")
        return {"requests": world.forge.budget.charged - before,
                "not_modified": world.forge.budget.not_modified - free}


def waiting_pull(webhooks: bool, seconds: float) -> dict[str, float]:
    """Budget-spending requests per hour of the looks at one succeeded run's open PR."""
    settings: dict[str, Any] = {"limits": {"poll_interval": "60s"}}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, \
            DemoWorld(Path(tmp), settings=settings) as world:
        run = world.wait_finished(world.open_issue(), timeout=240)
        if run.state is not RunState.SUCCEEDED:
            raise SystemExit(f"the run did not succeed: {run.state.value}: {run.reason}")
        if not webhooks:
            world.forge.repo(REPO).hooks.clear()
        world.forge.wait_idle()
        time.sleep(5.0)  # the looks the run's own ending asked for are not waiting
        before, free = world.forge.budget.charged, world.forge.budget.not_modified
        time.sleep(seconds)
        spent = world.forge.budget.charged - before
        saved = world.forge.budget.not_modified - free
    return {"per_hour": spent * 3600 / seconds, "not_modified_per_hour": saved * 3600 / seconds}


def idle(seconds: float) -> dict[str, float]:
    """Budget-spending requests per hour of a runner watching IDLE_REPOS repositories."""
    repos = [f"acme/repo-{i}" for i in range(IDLE_REPOS)]
    settings = {"repos": [{"name": name, "forge": "demo", "gate_profile": "demo",
                           "required_contexts": [CI_CONTEXT]} for name in [REPO, *repos]],
                "limits": {"poll_interval": "60s"}}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        world = DemoWorld(Path(tmp), settings=settings, start_runner=False)
        with world:
            for name in repos:
                world.forge.create_repo(name, files=SAMPLE_FILES)
                world.forge.grant(name, MAINTAINER, "write")
            world.start_runner_process()
            time.sleep(5.0)  # start-up reads are not idling
            before, free = world.forge.budget.charged, world.forge.budget.not_modified
            time.sleep(seconds)
            spent = world.forge.budget.charged - before
            saved = world.forge.budget.not_modified - free
    return {"per_hour": spent * 3600 / seconds, "not_modified_per_hour": saved * 3600 / seconds}


def main(argv: list[str]) -> int:
    idle_seconds = float(argv[0]) if argv else 180.0
    if argv[1:] == ["--waiting-only"]:  # the new figures alone (e.g. on an older checkout)
        print({"waiting_pull": waiting_pull(True, idle_seconds),
               "waiting_pull_polling": waiting_pull(False, idle_seconds)})
        return 0
    hooked = one_run(webhooks=True)
    print(f"  run with webhooks: {hooked}", file=sys.stderr)
    polled = one_run(webhooks=False)
    print(f"  run by polling: {polled}", file=sys.stderr)
    quiet = idle(idle_seconds)
    print(f"  idle: {quiet}", file=sys.stderr)
    pull_hooked = waiting_pull(True, idle_seconds)
    print(f"  a PR waiting for review, with webhooks: {pull_hooked}", file=sys.stderr)
    pull_polled = waiting_pull(False, idle_seconds)
    print(f"  a PR waiting for review, by polling: {pull_polled}", file=sys.stderr)
    report("forge-budget", 1, {
        "requests_per_run": hooked["requests"],
        "not_modified_per_run": hooked["not_modified"],
        "requests_per_run_polling": polled["requests"],
        "not_modified_per_run_polling": polled["not_modified"],
        "idle_requests_per_hour": round(quiet["per_hour"], 1),
        "idle_not_modified_per_hour": round(quiet["not_modified_per_hour"], 1),
        "waiting_pull_requests_per_hour": round(pull_hooked["per_hour"], 1),
        "waiting_pull_not_modified_per_hour": round(pull_hooked["not_modified_per_hour"], 1),
        "waiting_pull_requests_per_hour_polling": round(pull_polled["per_hour"], 1),
        "waiting_pull_not_modified_per_hour_polling": round(
            pull_polled["not_modified_per_hour"], 1),
        "idle_seconds": idle_seconds, "idle_repos": IDLE_REPOS + 1, "ci_seconds": CI_SECONDS,
        "target_requests_per_run": 60, "target_idle_requests_per_hour": 100,
    }, title="forge requests that spend GitHub's budget (304s excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
