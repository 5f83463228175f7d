"""QUEUED: wait while the daily spend budget is spent, acknowledge the issue, read its labels
as a writer set them, apply the 50% rule."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

from gates.choose import decide_yolo
from runner.forge.base import Forge, ForgeError
from runner.model import Run, RunState
from runner.run.context import RunContext, RunFailed
from runner.run.outcome import GoOn, Outcome
from runner.run.readers import trusted_labels, writer_comments
from runner.run.spending import hold
from runner.sizing import decide as size_issue


def step(ctx: RunContext) -> Outcome:
    """React on the issue, keep its trusted labels, refuse it when it is too large."""
    run, forge = ctx.run, ctx.forge
    held = hold(ctx)  # a spent daily budget: the run waits queued, before any acknowledgement
    if held is not None:
        return held
    ctx.before_write()
    # The comments (for sizing) are read while the labels are: one round trip, not two.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"comments-{run.id}") as pool:
        reading = pool.submit(writer_comments, ctx)
        # Read now, not taken from the trigger: the trigger read the issue before its label
        # events, so a label changed between the two reads (force added) would be missed.
        found = list(forge.get_issue(run.repo, run.issue).labels)
        comments = reading.result()
    labels = trusted_labels(ctx, found)
    ctx.note(issue_labels=tuple(found), labels=tuple(labels))
    yolo = decide_yolo(labels, repo_yolo=ctx.repo.yolo, allow_label=ctx.repo.allow_yolo_label,
                       global_yolo=ctx.settings.yolo)
    ctx.skip_gates, ctx.yolo_note = yolo.skip_gates, yolo.banner()
    if yolo.skip_gates:
        ctx.event("yolo", {"reason": yolo.reason, "note": "quality gates disabled"})
    threading.Thread(target=_react, args=(forge, run), daemon=True,
                     name=f"react-{run.id}").start()
    sizing = size_issue(run.issue_body, [text for _, text in comments],
                        ctx.settings.agent.context_window, labels=labels)
    ctx.event("sizing", {"reason": sizing.reason, "tokens": sizing.estimate.tokens})
    if not sizing.allowed:
        ctx.before_write()
        forge.upsert_comment(run.repo, run.issue, "orchestrator:too-large", sizing.comment)
        if sizing.label:
            ctx.before_write()
            forge.add_label(run.repo, run.issue, sizing.label)
        raise RunFailed("too large for one run (the 50% rule): " + sizing.reason)
    ctx.move(RunState.PREPARING)
    return GoOn()


def _react(forge: Forge, run: Run) -> None:
    with contextlib.suppress(ForgeError):
        forge.add_reaction(run.repo, run.issue, "eyes")
