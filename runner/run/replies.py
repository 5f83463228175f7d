"""A follow-up's answers on the pull request: one reply in each review thread it answered,
naming the commit, and one comment on the conversation for what it answered there.

Each answer carries a hidden marker naming the run and the thread, and is looked for before
it is written, so a retry or a crash in between never answers a thread twice.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from runner.forge.base import ForgeError, LineComment, hidden_marker
from runner.model import RunState
from runner.run.context import RunContext
from runner.run.pull_text import inert

log = logging.getLogger("orchestrator.run")


def reply_marker(run_id: str, thread: int) -> str:
    """The hidden marker of a follow-up's reply in one thread."""
    return hidden_marker(f"orchestrator:reply:{run_id}:{thread}")


def answer_marker(run_id: str) -> str:
    """The hidden marker of a follow-up's answer on the PR's conversation."""
    return f"orchestrator:follow-up:{run_id}"


def _summary(ctx: RunContext) -> str:
    done = [e for e in ctx.store.events(ctx.run.id, limit=100_000)
            if e.kind == "agent_done" and e.data.get("summary")]
    text = str(done[-1].data["summary"]).strip() if done else ""
    text = inert(text)  # the agent's words ping nobody and load no image
    return text if len(text) <= 1500 else text[:1500] + " […]"


def _what(ctx: RunContext) -> str:
    """What the follow-up did, naming the commit, or why it did nothing."""
    run = ctx.run
    summary = _summary(ctx)
    if run.state is RunState.SUCCEEDED:
        head = f"Addressed in {run.head_sha[:12]}" if run.head_sha else "Answered"
        return (f"{head} (follow-up run `{run.id}`; CI and the AI review passed)."
                + (f"\n\n{summary}" if summary else ""))
    return (f"Not done: the follow-up run `{run.id}` {run.state}: {run.reason}."
            + (f"\n\nThe agent said: {summary}" if summary else ""))


def answer(ctx: RunContext) -> None:
    """After a follow-up that ended (succeeded or failed; never after a kill): reply in each
    thread it answered and on the PR's conversation, once each."""
    run = ctx.run
    if not run.details.follows or not run.pr_number or run.state is RunState.CANCELLED:
        return
    if run.details.follow_up_kind not in ("review", "conflict"):
        return
    text = _what(ctx)
    forge = ctx.forge
    try:
        if run.details.threads:
            _reply_in_threads(ctx, text)
        forge.upsert_comment(run.repo, run.pr_number, answer_marker(run.id),
                             f"@{run.trigger_actor}: {text}" if run.details.follow_up_kind
                             == "review" else text)
    except ForgeError as exc:  # the next ending of this run (or an operator) may retry
        log.warning("run %s: could not answer on the pull request: %s", run.id, exc)
        ctx.event("answer_failed", {"error": str(exc)})


def _reply_in_threads(ctx: RunContext, text: str) -> None:
    run = ctx.run
    assert run.pr_number is not None  # only follow-ups of runs with a pull request answer threads  # noqa: S101
    existing = ctx.forge.list_line_comments(run.repo, run.pr_number)
    by_id: dict[int, LineComment] = {c.id: c for c in existing}
    for thread in run.details.threads:
        marker = reply_marker(run.id, thread)
        if thread in ctx.run.details.replied or any(
                marker in c.body for c in existing if c.in_reply_to == thread):
            continue
        root = by_id.get(thread)
        if root is None:  # deleted meanwhile: nothing to reply to
            continue
        ctx.forge.reply_to_line_comment(run.repo, run.pr_number, root, f"{text}\n\n{marker}")
        ctx.event("replied", {"thread": thread, "sha": run.head_sha})
        details = replace(ctx.run.details, replied=(*ctx.run.details.replied, thread))
        ctx.run = ctx.store.update_run(run.id, details=details)
