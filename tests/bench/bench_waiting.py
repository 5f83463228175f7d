"""scripts/bench waiting [N]: N issues (default 10) labelled at once with ``max_concurrent: 2``
and a CI job of 60 s on the emulator; how runs wait for CI. Measured twice: webhooks on, then
off (no webhook secret: the runner hears of nothing, finds labels by its resync and looks at
CI on its backoff); the second's figures carry ``_polling``.

Figures:
- ``max_waiting_at_once``: runs in GATING at the same moment (all N, when waits hold no slot);
- ``ci_requests_per_waiting_run_hour``: requests about CI state (``/commits/<sha>...``) the
  emulator received for a run's head between the run entering GATING and its CI finishing,
  summed over runs, per waiting-run hour;
- ``ci_requests_per_run``: all such requests for the head while the run was in GATING,
  the look after CI finished included;
- ``ci_done_to_next_step_p50_s``: CI finished to the run's next transition;
- ``held_per_waiting_run``: containers, worktrees and runner threads per waiting run, sampled
  when the most runs waited.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker

from runner.model import RunState
from runner.testing.demo import CI_CONTEXT, MAINTAINER, REPO, TEST_COMMAND, DemoWorld
from runner.testing.forge import Exchange
from tests.bench.common import median, report
from tests.support import containers_of

CI_SECONDS = 60


def _gating_windows(world: DemoWorld, run_id: str) -> list[tuple[float, float]]:
    """(entered, left) GATING, for each time the run was in it."""
    windows, entered = [], None
    for event in world.store.events(run_id, limit=10_000):
        if event.kind != "transition":
            continue
        if event.data.get("to") == "gating":
            entered = event.at
        elif event.data.get("from") == "gating" and entered is not None:
            windows.append((entered, event.at))
            entered = None
    return windows


def measure(n: int, *, polling: bool) -> dict[str, Any]:
    client = docker.from_env()
    requests: list[tuple[float, str]] = []

    def seen(exchange: Exchange) -> None:
        if exchange.method == "GET" and "/commits/" in exchange.path:
            requests.append((time.time(), exchange.path))

    with tempfile.TemporaryDirectory(prefix="bench-waiting-") as tmp:
        world = DemoWorld(Path(tmp), start_runner=False, settings={
            "limits": {"max_concurrent": 2, "per_repo": n, "max_iterations": 3,
                       "poll_interval": "5s" if polling else "60s", "lease_ttl": "10s",
                       "ci_timeout": "10m"}})
        with world:
            if polling:
                world.overrides["forges"] = {"demo": {
                    "kind": world.flavour, "base_url": world.forge.base_url,
                    "token_env": "DEMO_FORGE_TOKEN", "bot_user": "orchestrator-bot"}}
            world.start_runner_process()
            world.forge.configure_ci(REPO, f"sleep {CI_SECONDS} && {TEST_COMMAND}",
                                     context=CI_CONTEXT)
            world.forge.observers.append(seen)
            data_dir = Path(world.settings_dict()["data_dir"])
            issues = [world.open_issue(title=f"waiting {i}", label=False) for i in range(n)]
            for issue in issues:
                world.forge.label(REPO, issue, "orchestrator", as_user=MAINTAINER)
            best: dict[str, Any] = {"waiting": 0}
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                runs = [world.run_for(issue) for issue in issues]
                if runs and all(r is not None and r.terminal for r in runs):
                    break
                waiting = [r for r in runs if r is not None and r.state is RunState.GATING
                           and r.waiting]
                if len(waiting) > best["waiting"]:
                    best = {"waiting": len(waiting),
                            "containers": sum(len(containers_of(client, r.id))
                                              for r in waiting),
                            "worktrees": sum((data_dir / "worktrees" / r.id).exists()
                                             for r in waiting),
                            # the runner's threads named after a waiting run (its lease
                            # heartbeat, status writer, agent): the emulators share the process
                            "threads": sum(1 for t in threading.enumerate()
                                           if any(r.id in t.name for r in waiting))}
                time.sleep(0.5)
            runs = [world.wait_finished(issue, timeout=60) for issue in issues]
            finished_at: dict[str, float] = {}
            for job in world.forge.ci_jobs:
                if job.finished_at:
                    finished_at[job.sha] = min(finished_at.get(job.sha, job.finished_at),
                                               job.finished_at)
            intervals, waited_s, wait_requests, all_requests, to_next = [], 0.0, 0, 0, []
            for run in runs:
                for entered, left in _gating_windows(world, run.id):
                    intervals.append((entered, left))
                    head = max(((e.at, e.data["sha"]) for e in world.store.events(
                        run.id, limit=10_000) if e.kind == "pushed" and e.at <= entered),
                        default=(0.0, ""))[1]
                    done = finished_at.get(head)
                    in_gating = [at for at, path in requests if entered <= at <= left
                                 and f"/commits/{head}" in path]
                    all_requests += len(in_gating)
                    if done is None:
                        continue
                    waited_s += max(done - entered, 0.0)
                    wait_requests += sum(1 for at in in_gating if at <= done)
                    to_next.append(max(left - done, 0.0))
            most = max(sum(1 for a, b in intervals if a <= t < b) for t, _ in intervals)
            outcome = {str(s): sum(1 for r in runs if r.state is s) for s in RunState
                       if any(r.state is s for r in runs)}
    waiting_n = max(best["waiting"], 1)
    return {
        "webhooks": not polling,
        "completed": outcome,
        "max_waiting_at_once": most,
        "ci_requests_per_waiting_run_hour":
            round(wait_requests / waited_s * 3600, 1) if waited_s else None,
        "ci_requests_per_run": round(all_requests / max(len(intervals), 1), 2),
        "ci_done_to_next_step_p50_s": round(median(to_next), 3) if to_next else None,
        "held_per_waiting_run": {
            "sampled_waiting": best["waiting"],
            "containers": round(best.get("containers", 0) / waiting_n, 2),
            "worktrees": round(best.get("worktrees", 0) / waiting_n, 2),
            "threads": round(best.get("threads", 0) / waiting_n, 2)},
    }


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 10
    hooked = measure(n, polling=False)
    polled = measure(n, polling=True)
    figures = {**hooked, **{f"{key}_polling": value for key, value in polled.items()
                            if key != "webhooks"}}
    figures.pop("webhooks")
    report("waiting", n, figures,
           title=f"{n} runs waiting on a {CI_SECONDS}s CI with 2 worker slots")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
