"""Where runs are created, and the only place: a trigger the plan started (the controller),
a declined trigger recorded as a run (``runner.decline``), a run asked for without a label
(the API's dispatch and ``orchestrator run``), a follow-up of an earlier run (a review, a
``/retry``, a conflicting base: ``create_follow_up``). Every run gets its branch
``orchestrator/issue-<n>`` here, and a run asked for without a label gets the issue's text as
a reader sees it (``policy.task_text``)."""

from __future__ import annotations

from runner.forge.base import Forge
from runner.model import PRIORITY_DEFAULT, Run, RunDetails, branch_name
from runner.policy import task_text
from runner.store.base import Store


def create_run(store: Store, repo: str, issue: int, *, actor: str, title: str = "",
               body: str = "", text_hash: str = "", priority: int = PRIORITY_DEFAULT,
               details: RunDetails | None = None) -> tuple[Run, bool]:
    """A new queued run of ``repo#issue`` triggered by ``actor`` with the issue text it will
    work from; (the issue's active run, False) when it has one already."""
    return store.create_run(repo, issue, trigger_actor=actor, issue_title=title,
                            issue_body=body, issue_hash=text_hash, branch=branch_name(issue),
                            priority=priority, details=details or RunDetails())


def create_run_for_issue(store: Store, forge: Forge, repo: str, issue: int, *, actor: str,
                         priority: int = PRIORITY_DEFAULT) -> tuple[Run, bool]:
    """A run asked for without a label: the issue is read from ``forge`` now, and its text
    is what a reader of the rendered page sees (``runner.text.UnreadableText`` when that
    cannot be told). (The issue's active run, False) when it has one already."""
    found = forge.get_issue(repo, issue)
    title, body, digest = task_text(found.title, found.body)
    return create_run(store, repo, issue, actor=actor, title=title, body=body,
                      text_hash=digest, priority=priority)


def create_follow_up(store: Store, previous: Run, *, actor: str,
                     details: RunDetails) -> tuple[Run, bool]:
    """A new queued run for the issue of ``previous`` that resumes from its branch and pull
    request, with the text ``previous`` was triggered with; (the issue's active run, False)
    when it has one already."""
    return store.create_run(
        previous.repo, previous.issue, trigger_actor=actor, issue_title=previous.issue_title,
        issue_body=previous.issue_body, issue_hash=previous.issue_hash,
        branch=previous.branch or branch_name(previous.issue), pr_number=previous.pr_number,
        pr_url=previous.pr_url, priority=previous.priority, details=details)
