"""``orchestrator demo --keep``: after the scripted story, the demo's world stays up to be
clicked: the forge's pages (as the demo's maintainer), the dashboard, the runner and the LLM
emulator, until Ctrl-C. Stopping kills what still runs (each run removes its container and
worktree) and stops every server, so nothing is left behind.
"""

from __future__ import annotations

import functools
import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.agent.base import FOLLOW_UP_HEADING
from runner.model import Run
from runner.store.base import kill_all
from runner.testing.demo import (
    MAINTAINER,
    REPO,
    SLOW_TITLE,
    TEST_COMMAND,
    DemoWorld,
    demo_agent,
    demo_settings,
)
from runner.testing.demo_review import answering
from runner.testing.forge import Flavour
from runner.testing.llm import Policy, Reply, Request, Script
from runner.webauth import SIGN_IN_SECONDS, Auth

STOP_TIMEOUT_S = 90.0
KNOWN = ("add(", "sum", "wrong result", "returns -1", "calculator", "test_calc")
NOTE = ("# A note from the playground's agent\n\n"
        "This agent is scripted: it can fix the calculator's `add()` (open an issue saying "
        "that add() returns the wrong result), or work slowly on an issue titled "
        f"\"{SLOW_TITLE}\" so that you can kill it. It did not understand this request, so "
        "it only left this note.\n")


NEGATIVE_TEST = "assert add(-2, -3) == -5, 'add() of two negative numbers'\n"
_LAST_TEST_LINE = "print('all tests pass')\n"
# A fixed command: nothing a reviewer wrote reaches it.
_NOTE_COMMAND = ("printf '%s\\n' \"- $(date -u +%H:%M:%S) UTC: a review asked for something "
                 "this scripted agent cannot do.\" >> PLAYGROUND.md")


def answering_reviews(first: Policy) -> Policy:
    """``first`` for a run's own work; a follow-up (a review made on the pull request's page)
    gets an answer: a test with negative numbers when the review asks for one, mul()'s
    docstring when it asks for that (the demo's own review round), and otherwise a line in
    PLAYGROUND.md and a summary saying what this agent can do."""
    docstring = answering(first, TEST_COMMAND)
    negative = Script([
        Reply.edit("str_replace", "test_calc.py", "The review asks for a test with negative "
                   "numbers.", old_str=_LAST_TEST_LINE, new_str=NEGATIVE_TEST + _LAST_TEST_LINE),
        Reply.bash(TEST_COMMAND, "Running the tests again."),
        Reply.finish(f"Added a test with negative numbers: `{NEGATIVE_TEST.strip()}` in "
                     f"`test_calc.py`; `{TEST_COMMAND}` passes."),
    ])
    note = Script([
        Reply.bash(_NOTE_COMMAND, "I cannot do what this review asks; noting it."),
        Reply.finish("I am the playground's scripted agent: in a review I can only add a test "
                     "with negative numbers, or a docstring to mul(). I could not do what "
                     "this review asks, and noted it in PLAYGROUND.md."),
    ])

    def policy(request: Request) -> Reply:
        text = request.first_user_text()
        if FOLLOW_UP_HEADING not in text:
            return first(request)
        # what the reviewers ask: the follow-up section only (not AGENTS.md, which says "test")
        asked = text.split(FOLLOW_UP_HEADING, 1)[1].split("\n## ", 1)[0].lower()
        if "docstring" in asked:
            return docstring(request)
        return negative(request) if "negative" in asked else note(request)

    return policy


def playground_agent() -> Policy:
    """The demo's agent (fixes add(), works slowly on the issue to kill), and for a request
    it does not know, a polite finish: a note saying what it can do, and nothing else. It
    answers reviews of its pull requests (``answering_reviews``)."""
    return answering_reviews(_working_agent())


def _working_agent() -> Policy:
    known = demo_agent()

    def policy(request: Request) -> Reply:
        text = request.first_user_text().lower()
        if "what failed last time" in text or any(word in text for word in KNOWN):
            return known(request)
        if request.turn == 0:  # a fixed note: nothing from the issue reaches a command
            return Reply.edit("create", "PLAYGROUND.md", "I do not know how to do this; "
                              "leaving a note.", file_text=NOTE)
        return Reply.finish("I am the playground's scripted agent and can only fix add() "
                            "(or work slowly, to be killed). I left a note in PLAYGROUND.md.")

    return policy


def reviewing_with_a_note(request: Request) -> Reply:
    """The playground's reviewer: approves the fix, with a nit as a line comment on the line
    the agent changed (so the pull request page shows a review comment beside its line)."""
    return Reply.text(json.dumps({
        "verdict": "approve", "confidence": 0.95,
        "summary": "add() now returns the sum; the test covers it.",
        "findings": [{"path": "calc.py", "line": 6, "severity": "nit",
                      "message": "Right fix. A test with negative numbers would pin it down."}],
    }))


def demo_options(say: Callable[[str], None]) -> dict[str, Any]:
    """``run_demo``'s arguments for ``demo --keep``: the playground's agent and reviewer, and
    the world kept up until Ctrl-C."""
    return {"agent": playground_agent(), "reviewer": reviewing_with_a_note,
            "keep": lambda world: keep_until_stopped(world, say)}


def dashboard_auth(world: DemoWorld) -> Auth:
    """The dashboard's web auth (its token is in this process's environment)."""
    return Auth(world.settings_dict()["server"]["api_token_env"])


def playground_world(workdir: Path, flavour: Flavour = "github") -> DemoWorld:
    """The world ``demo --keep`` keeps up (its agent, reviewer and settings), not started:
    what the browser tests click through."""
    return DemoWorld(workdir, flavour=flavour, agent=playground_agent(),
                     reviewer=reviewing_with_a_note, settings=demo_settings())


def welcome(world: DemoWorld, finished: Run | None) -> list[str]:
    """What to open, who you are and how to stop: the lines ``--keep`` prints."""
    assert world.server is not None
    forge, dash = world.forge.url, world.server.url
    link = dashboard_auth(world).sign_in_url(dash, "/runs")
    lines = [
        "",
        "The playground is up. Open:",
        f"  issues (the forge):  {forge}/{REPO}/issues",
    ]
    if finished is not None and finished.pr_url:
        lines.append(f"  the pull request:    {finished.pr_url}")
    lines += [
        f"  dashboard:           {link}",
        f"                       (signs you in once, within {SIGN_IN_SECONDS // 60} minutes; "
        "later, use the forge",
        "                       pages' Dashboard link, or sign in with the token "
        f"{world.env['DEMO_API_TOKEN']})",
        "",
        f"You are @{MAINTAINER}, the repository's maintainer, signed in on the forge pages "
        "and the dashboard.",
        "Try: open an issue and add the `orchestrator` label; watch the run on the dashboard;",
        "     review the pull request: request changes with a line comment asking for a test",
        "     with negative numbers; a follow-up run answers it on the same PR and replies in",
        "     your comment's thread (this scripted agent knows that request, and a docstring",
        "     for mul(); anything else gets a polite note); merge it with its Merge button;",
        f"     open an issue titled \"{SLOW_TITLE}\", label it, and type `/kill` in its",
        "     comment box.",
        "",
        "Press Ctrl-C to stop: running runs are killed, then every server stops.",
    ]
    return lines


def open_playground(world: DemoWorld) -> None:
    """Serve the forge's pages as the maintainer, linked to the dashboard (each link signs
    in with a fresh one-time link)."""
    assert world.server is not None
    for name in ("orchestrator", "orchestrator:kill"):  # Forgejo adds known labels only
        world.forge.state.ensure_label(world.forge.repo(REPO), name)
    dash, auth = world.server.url, dashboard_auth(world)
    world.forge.serve_pages(MAINTAINER, dashboard_url=dash,
                            note=f"Playground: you are @{MAINTAINER}, the maintainer.",
                            sign_in=lambda path: auth.sign_in_url(dash, path))


def keep_until_stopped(world: DemoWorld, say: Callable[[str], None],
                       stop: threading.Event | None = None) -> None:
    """Serve the forge pages, print the welcome, wait for Ctrl-C (or SIGTERM, or ``stop``),
    then kill what still runs and wait until each run has cleaned up."""
    open_playground(world)
    first = world.run_for(1)
    for line in welcome(world, first):
        say(line)
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    say("stopping: killing the runs still going, then the servers")
    shut_down(world)
    say("stopped: no run, container or worktree is left")


def shut_down(world: DemoWorld, timeout: float = STOP_TIMEOUT_S) -> None:
    """Kill every active run and wait until each one has ended and cleaned up."""
    store = world.store
    killed = kill_all(store, actor="cli:demo", reason="the playground stopped")

    def cleaned(run_id: str) -> bool:
        return store.get_run(run_id).terminal and any(
            e.kind == "cleaned_up" for e in store.events(run_id, limit=10000))

    for run_id in killed:
        world.wait_for(functools.partial(cleaned, run_id), timeout,
                       f"the cleanup of run {run_id}")
