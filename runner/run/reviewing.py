"""REVIEWING: the independent AI reviewer, posted as a PR review and a commit status."""

from __future__ import annotations

from gates.diff import parse_unified_diff
from gates.model import GateResult
from runner import review
from runner.forge.base import ReviewComment
from runner.model import RunState
from runner.run.context import Cancelled, RunContext, RunFailed
from runner.run.iteration import next_iteration
from runner.run.outcome import GoOn, Outcome
from runner.run.workdir import worktree


def step(ctx: RunContext) -> Outcome:
    """Review the diff; approve and finish, or hand the findings to the agent."""
    run, forge, settings = ctx.run, ctx.forge, ctx.settings
    diff_text = ctx.services.workspaces.diff(worktree(ctx), cancel=ctx.handle.cancel)
    # The stricter of the profile's threshold and the runner's.
    threshold = max(ctx.profile.review.threshold, settings.review.threshold)
    try:
        verdict = review.review(
            review.ReviewInput(issue_title=run.issue_title, issue_body=run.issue_body,
                               diff=diff_text, gate_results=tuple(
                                   GateResult.from_dict(r) for r in ctx.details.gate_results),
                               repo=run.repo, issue_number=run.issue),
            client=ctx.services.review_client, model=settings.review.model,
            threshold=threshold, max_diff_chars=settings.review.max_diff_chars,
            cancel=ctx.handle.cancel,
            on_wait=lambda wait: ctx.event("model_unavailable",
                                           {**wait.as_event(), "who": "reviewer"}))
    except review.Interrupted:
        raise Cancelled() from None
    except review.Unavailable as exc:
        raise RunFailed(f"the AI review could not be made: {exc}") from None
    ctx.check_cancel()
    ctx.event("review", {"verdict": verdict.verdict, "confidence": verdict.output.confidence,
                         "summary": verdict.output.summary[:2000],
                         "findings": [f.model_dump() for f in verdict.findings],
                         "usage": verdict.usage})
    tokens = verdict.usage
    ctx.update(tokens_in=run.tokens_in + tokens.get("input_tokens", 0),
               tokens_out=run.tokens_out + tokens.get("output_tokens", 0))
    ctx.before_write()
    if run.pr_number:
        rendered = review.render_review(
            verdict, review.commentable_lines(parse_unified_diff(diff_text)))
        forge.post_review(run.repo, run.pr_number, rendered.body,
                          [ReviewComment(c["path"], c["line"], c["body"])
                           for c in rendered.comments], commit_sha=run.head_sha)
    status = review.status_for(verdict)
    ctx.before_write()
    forge.set_status(run.repo, run.head_sha, status["context"],
                     "success" if verdict.approved else "failure", status["description"])
    if verdict.approved:
        ctx.move(RunState.SUCCEEDED, reason="CI green and AI review approves")
        return GoOn()
    next_iteration(ctx, review.review_failures(verdict))
    return GoOn()
