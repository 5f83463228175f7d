"""One forge event inside a CI job (``orchestrator handle-event``): look, and maybe work."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from runner.forge.base import ForgeError
from runner.plan import Start
from runner.store.base import StoreError
from runner.workqueue import issue_key

if TYPE_CHECKING:
    from runner.controller.core import Controller


def handle_one(controller: Controller, repo: str, issue: int, *, trigger_event: bool | None,
               kill_check: float = 5.0) -> str:
    """Handle one forge event in a CI job: look at the issue once; if that starts a run,
    work on it here to the end, looking at the issue again every ``kill_check`` seconds
    so a kill label, a ``/kill`` or an unlabel stops it.

    Each job may have a store of its own, so only the event that added the trigger label
    (``trigger_event``; None: read the issue's timeline to tell) may start a run: any
    other event (a comment, another label) would otherwise start a second one.
    """
    key = issue_key(repo, issue)
    if trigger_event is None:  # Forgejo's label_updated does not say which label
        forge = controller.forges[controller.settings.repo(repo).forge]
        events = forge.label_events(repo, issue)
        trigger_event = bool(events) and events[-1].action == "added" and \
            events[-1].label.lower() == controller.rules.trigger_label.lower()
    if not trigger_event:
        if controller.store.active_run(repo, issue) is not None:  # a store shared with others
            return f"{key}: {controller.reconcile(key)}"
        return (f"{key}: this event starts nothing; the job working on the issue checks "
                f"it for kill signals every {kill_check:g}s")
    action = controller.reconcile(key)
    run = controller.store.active_run(repo, issue)
    if run is None or not isinstance(action, Start):
        return f"{key}: {action}"

    def watch() -> None:
        while not controller.stopping.wait(kill_check):
            with contextlib.suppress(ForgeError, StoreError):
                controller.reconcile(key)

    controller.spawn("kill-check", watch)
    try:
        controller.drive_in_foreground(run.id)
    finally:
        controller.stopping.set()
    final = controller.store.get_run(run.id)
    return f"{key}: run {final.id} {final.state} {final.reason} {final.pr_url}".strip()
