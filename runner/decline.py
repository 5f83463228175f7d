"""Carrying out a ``plan.Decline``: a trigger answered once on the issue and kept in the audit.

A declined trigger becomes a run that fails at once, with the reason: the store's audit
events record who triggered and why nothing started, ``orchestrator runs`` lists it, and the
plan sees "a run already ended for this label" on every later look, so the issue is answered
once however often it is looked at. The comment is written first (idempotently, by a marker
per trigger), so a failure between the two repeats the comment's upsert, never the comment.
"""

from __future__ import annotations

import logging

from runner.forge.base import Forge
from runner.model import RunDetails, RunState
from runner.plan import Decline
from runner.run_creation import create_run
from runner.store.base import Store

log = logging.getLogger("orchestrator.decline")


def declined_marker(trigger_count: int) -> str:
    """The hidden marker of the answer to one trigger (the n-th time the label was added)."""
    return f"orchestrator:declined:{trigger_count}"


def decline(store: Store, forge: Forge, repo: str, issue: int, action: Decline, *,
            worker: str, ttl: float) -> None:
    """Answer the trigger on the issue, then record it as a run that failed at once."""
    forge.upsert_comment(repo, issue, declined_marker(action.trigger_count), action.reason)
    run, created = create_run(
        store, repo, issue, actor=action.actor,
        details=RunDetails(trigger_at=action.trigger_at, trigger_count=action.trigger_count))
    if not created:
        return
    lease = store.claim_run(run.id, worker, ttl)
    if lease is None:  # a worker took it in the instant between: it stops it at once
        store.request_kill(run.id, actor=action.actor, reason=action.reason)
        return
    try:
        store.transition(run.id, RunState.QUEUED, RunState.FAILED, actor=action.actor,
                         reason=action.reason, fence=lease.token)
        store.append_event(run.id, "trigger_declined", {"reason": action.reason},
                           actor=action.actor)
    finally:
        store.release(lease)
    log.info("%s#%s: trigger by %s declined: %s", repo, issue, action.actor, action.reason)
