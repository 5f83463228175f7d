"""A kill in every state of a run, each held open by what a real deployment meets: a slot
taken (queued), a slow fetch (preparing), a long agent command (running), a slow push
(pushing), a long CI (gating), a slow reviewer (reviewing). Shared by the e2e test, which
checks that nothing is written to the forge after the kill, and by ``scripts/bench kill``,
which times it."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.model import Run, RunState
from runner.testing.demo import (
    CI_CONTEXT,
    MAINTAINER,
    REPO,
    TEST_COMMAND,
    DemoWorld,
    approving_reviewer,
    fixing_agent,
    slow_agent,
)
from runner.testing.forge import Exchange
from runner.testing.llm import Policy, Reply, Request
from tests.support import containers_of

SLOW = 120.0  # seconds the held-open thing would take: a kill must not wait for it
STATES = [RunState.QUEUED, RunState.PREPARING, RunState.RUNNING, RunState.PUSHING,
          RunState.GATING, RunState.REVIEWING]
# GATING again, killed while its look at CI hangs on the forge (a request the kill cannot cut).
HUNG_LOOK = "gating-hung-look"


@dataclass
class Writes:
    """The forge writes (API calls other than GET) seen after a moment, with their bodies."""

    since: float = float("inf")
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, exchange: Exchange) -> None:
        if exchange.method == "GET" or time.time() < self.since:
            return
        with self._lock:
            self.seen.append((exchange.method, exchange.path,
                              exchange.request_body.decode("utf-8", "replace")))

    def not_the_kills_own(self, trigger_label: str = "orchestrator") -> list[str]:
        """Writes other than the kill's own record (the status comment saying who killed the
        run, the trigger label taken off)."""
        bad = []
        for method, path, body in self.seen:
            if "/comments" in path and method in ("POST", "PATCH"):
                text = json.loads(body or "{}").get("body", "")
                if "Killed by" in text or "/kill" in text:
                    continue
            if method == "DELETE" and path.endswith(f"/labels/{trigger_label}"):
                continue
            bad.append(f"{method} {path}")
        return bad


def _agent(slow_titles: tuple[str, ...]) -> Policy:
    fixing, sleepy = fixing_agent(), slow_agent(600)

    def policy(request: Request) -> Reply:
        first = str(request.messages[0].get("content", "")) if request.messages else ""
        return sleepy(request) if any(t in first for t in slow_titles) else fixing(request)

    return policy


def _slow_reviewer(request: Request) -> Reply:
    return dataclasses.replace(approving_reviewer(request), delay=SLOW)


@dataclass
class Scenario:
    """How to hold a run in ``state``, and when it is there."""

    state: RunState
    settings: dict[str, Any] = field(default_factory=dict)
    agent: Policy = field(default_factory=fixing_agent)
    reviewer: Policy | None = None
    arrange: Callable[[DemoWorld], None] = lambda world: None
    # How long to let the state's work get going before the kill.
    settle: float = 0.5
    waiting: bool = True  # GATING: kill once the run waits (else: while it looks)

    def world(self, workdir: Path) -> DemoWorld:
        return DemoWorld(workdir, agent=self.agent, reviewer=self.reviewer,
                         settings={"limits": {"max_concurrent": 2, "per_repo": 4,
                                              "lease_ttl": "5s", "ci_timeout": "15m"},
                                   **self.settings})


def scenario(state: RunState | str) -> Scenario:
    if state == HUNG_LOOK:
        def hang_the_ci_look(world: DemoWorld) -> None:
            world.forge.configure_ci(REPO, f"sleep 3 && {TEST_COMMAND}", context=CI_CONTEXT)
            world.forge.slow_api(SLOW, "/status")  # the combined status of a commit

        return Scenario(RunState.GATING, arrange=hang_the_ci_look, settle=6.0, waiting=False)
    assert isinstance(state, RunState)
    if state is RunState.QUEUED:
        def take_the_slot(world: DemoWorld) -> None:
            blocker = world.open_issue(title="blocker")
            world.wait_state(blocker, RunState.RUNNING, timeout=120)

        return Scenario(state, settings={"limits": {"max_concurrent": 1, "per_repo": 4,
                                                    "lease_ttl": "5s"}},
                        agent=_agent(("blocker",)), arrange=take_the_slot, settle=0.2)
    if state is RunState.PREPARING:
        return Scenario(state, arrange=lambda world: world.forge.slow_git(SLOW, "upload-pack"))
    if state is RunState.RUNNING:
        return Scenario(state, agent=_agent(("kill me",)), settle=1.0)
    if state is RunState.PUSHING:
        return Scenario(state, arrange=lambda world: world.forge.slow_git(SLOW, "receive-pack"))
    if state is RunState.GATING:
        return Scenario(state, arrange=lambda world: world.forge.configure_ci(
            REPO, f"sleep {SLOW:g} && {TEST_COMMAND}", context=CI_CONTEXT))
    return Scenario(state, reviewer=_slow_reviewer)


def hold_and_kill(world: DemoWorld, held: Scenario, docker_client: Any, writes: Writes,
                  title: str = "kill me") -> tuple[Run, float]:
    """Label an issue, wait until its run is held in the scenario's state, comment /kill;
    the cancelled run and the seconds from the /kill to container gone and run cancelled."""
    issue = world.open_issue(title=title)
    run = world.wait_state(issue, held.state, timeout=180)
    if held.state is RunState.GATING and held.waiting:
        world.wait_for(lambda: (r := world.run_for(issue)) is not None and r.waiting, 60,
                       "the run waiting on CI")
    time.sleep(held.settle)
    if held.state is RunState.GATING and not held.waiting:  # a process is looking at CI
        world.wait_for(lambda: world.store.current_lease(run.id) is not None, 60,
                       "a look at CI in flight")
    started = time.monotonic()
    world.forge.comment(REPO, issue, "/kill enough", as_user=MAINTAINER)
    writes.since = time.time()

    def gone() -> bool:
        current = world.store.get_run(run.id)
        return current.state is RunState.CANCELLED and not containers_of(docker_client, run.id)

    world.wait_for(gone, SLOW / 3, f"the kill of #{issue} in {held.state}")
    seconds = time.monotonic() - started
    return world.wait_finished(issue, timeout=60), seconds
