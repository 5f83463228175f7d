"""One adapter suite, run against both emulator flavours through the real clients (PyGithub,
httpx); every answer the emulator gives is validated against the published contracts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from runner.forge.base import (
    CIState,
    ForgeAuthError,
    NotFound,
    ReviewComment,
)
from tests.contract.forge.conftest import TOKEN_ENV, World

MARKER = "<!-- orchestrator:status -->"


def test_get_issue_reads_what_the_maintainer_wrote(world: World) -> None:
    number = world.emulator.open_issue(world.repo, "Fix the parser", "It breaks on tabs.",
                                       as_user="maintainer", labels=["orchestrator", "bug"])
    issue = world.forge.get_issue(world.repo, number)
    assert (issue.number, issue.title, issue.body) == (number, "Fix the parser",
                                                        "It breaks on tabs.")
    assert set(issue.labels) == {"orchestrator", "bug"} and issue.has_label("ORCHESTRATOR")
    assert (issue.state, issue.author) == ("open", "maintainer")
    world.emulator.close(world.repo, number, as_user="maintainer")
    assert world.forge.get_issue(world.repo, number).state == "closed"
    assert world.checker.checked >= 2


def test_missing_issue_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        world.forge.get_issue(world.repo, 4242)


def test_list_issues_pages_through_every_open_labelled_issue(world: World) -> None:
    emu = world.emulator
    wanted = {emu.open_issue(world.repo, f"task {i}", as_user="maintainer",
                             labels=["orchestrator"]) for i in range(105)}
    emu.open_issue(world.repo, "unlabelled", as_user="maintainer")
    closed = emu.open_issue(world.repo, "done", as_user="maintainer", labels=["orchestrator"])
    emu.close(world.repo, closed, as_user="maintainer")
    emu.push_branch(world.repo, "feature", {"a.txt": "a"}, as_user="orchestrator-bot")
    pull = world.forge.find_or_create_pull(world.repo, "feature", "main", "A PR", "body")
    emu.label(world.repo, pull.number, "orchestrator", as_user="maintainer")

    found = [i.number for i in world.forge.list_issues(world.repo, "orchestrator")]
    assert sorted(found) == sorted(wanted)  # every page, no closed issue, no pull request
    assert any("page=2" in x.query.get("page", "") or x.query.get("page") == "2"
               for x in emu.exchanges)


def test_comments_since_a_time(world: World) -> None:
    number = world.emulator.open_issue(world.repo, "t", as_user="maintainer")
    world.emulator.comment(world.repo, number, "first", as_user="maintainer")
    comments = world.forge.list_comments(world.repo, number)
    assert [(c.author, c.body) for c in comments] == [("maintainer", "first")]
    later = comments[0].created_at + timedelta(seconds=1)
    time.sleep(1.05)  # both forges keep whole seconds
    world.emulator.comment(world.repo, number, "/kill", as_user="contributor")
    recent = world.forge.list_comments(world.repo, number, since=later)
    assert [(c.author, c.body) for c in recent] == [("contributor", "/kill")]


def test_label_events_say_who_added_and_removed_a_label(world: World) -> None:
    number = world.emulator.open_issue(world.repo, "t", as_user="maintainer")
    world.emulator.label(world.repo, number, "orchestrator", as_user="contributor")
    world.emulator.unlabel(world.repo, number, "orchestrator", as_user="maintainer")
    events = world.forge.label_events(world.repo, number)
    assert [(e.label, e.actor, e.action) for e in events] == [
        ("orchestrator", "contributor", "added"), ("orchestrator", "maintainer", "removed")]
    assert all(e.at.tzinfo is not None and e.at <= datetime.now(UTC) for e in events)


def test_permission_levels(world: World) -> None:
    world.emulator.add_user("reader")
    world.emulator.grant(world.repo, "reader", "read")
    assert world.forge.permission(world.repo, "maintainer") == "admin"
    assert world.forge.permission(world.repo, "contributor") == "write"
    assert world.forge.permission(world.repo, "reader") == "read"
    assert world.forge.permission(world.repo, "nobody-at-all") == "none"


def test_add_label_creates_it_when_missing_and_remove_is_idempotent(world: World) -> None:
    number = world.emulator.open_issue(world.repo, "t", as_user="maintainer")
    world.forge.add_label(world.repo, number, "orchestrator:running")
    world.forge.add_label(world.repo, number, "orchestrator:running")
    assert world.forge.get_issue(world.repo, number).labels == ("orchestrator:running",)
    world.forge.remove_label(world.repo, number, "orchestrator:running")
    world.forge.remove_label(world.repo, number, "orchestrator:running")
    world.forge.remove_label(world.repo, number, "never-existed")
    assert world.forge.get_issue(world.repo, number).labels == ()


def test_upsert_comment_edits_its_own_comment_in_place(world: World) -> None:
    number = world.emulator.open_issue(world.repo, "t", as_user="maintainer")
    world.emulator.comment(world.repo, number, "a human comment", as_user="maintainer")
    first = world.forge.upsert_comment(world.repo, number, "orchestrator:status", "Run queued")
    second = world.forge.upsert_comment(world.repo, number, MARKER, "Run succeeded")
    assert first.id == second.id
    bodies = [c.body for c in world.forge.list_comments(world.repo, number)]
    assert bodies == ["a human comment", f"Run succeeded\n\n{MARKER}"]


def test_reactions_on_issue_and_comment(world: World) -> None:
    number = world.emulator.open_issue(world.repo, "t", as_user="maintainer")
    comment = world.emulator.comment(world.repo, number, "/kill", as_user="maintainer")
    world.forge.add_reaction(world.repo, number, "eyes")
    world.forge.add_reaction(world.repo, number, "eyes")  # again: no error, no duplicate
    world.forge.add_reaction(world.repo, number, "+1", comment_id=comment)
    issue = world.emulator.issue(world.repo, number)
    assert [(r.user.login, r.content) for r in issue.reactions] == [(world.bot_login, "eyes")]
    assert [(r.user.login, r.content) for r in issue.comments[0].reactions] == [
        (world.bot_login, "+1")]


def test_find_or_create_pull_is_idempotent_and_drafts_become_ready(world: World) -> None:
    emu = world.emulator
    sha = emu.push_branch(world.repo, "orchestrator/issue-7", {"fix.py": "x = 1\n"},
                          as_user="orchestrator-bot")
    assert world.forge.find_pull(world.repo, "orchestrator/issue-7", "main") is None
    pr = world.forge.find_or_create_pull(world.repo, "orchestrator/issue-7", "main",
                                         "Fix #7", "Closes #7")
    again = world.forge.find_or_create_pull(world.repo, "orchestrator/issue-7", "main",
                                            "Fix #7", "Closes #7")
    assert pr.number == again.number
    assert (pr.draft, pr.head, pr.base, pr.head_sha, pr.title) == (
        True, "orchestrator/issue-7", "main", sha, "Fix #7")
    assert len(emu.repo(world.repo).pulls()) == 1

    newer = emu.push_branch(world.repo, "orchestrator/issue-7", {"fix.py": "x = 2\n"},
                            as_user="orchestrator-bot")
    assert world.forge.get_pull(world.repo, pr.number).head_sha == newer

    ready = world.forge.update_pull(world.repo, pr.number, title="Fix #7 (ready)",
                                    body="Closes #7\n\ncost: $0.10", draft=False)
    assert (ready.draft, ready.title, ready.body) == (False, "Fix #7 (ready)",
                                                      "Closes #7\n\ncost: $0.10")
    assert world.forge.get_pull(world.repo, pr.number).draft is False


def test_ci_state_merges_contexts_and_no_status_is_never_green(world: World) -> None:
    emu = world.emulator
    sha = emu.push_branch(world.repo, "ci-branch", {"a": "1"}, as_user="orchestrator-bot")
    empty = world.forge.ci_state(world.repo, sha)
    assert empty == CIState(sha=sha) and empty.state == "none"
    assert empty.required_state(["build"]) == "pending"

    emu.set_status(world.repo, sha, "pending", "build", description="running")
    assert world.forge.ci_state(world.repo, sha).state == "pending"
    emu.set_status(world.repo, sha, "success", "build", target_url="http://ci/1")
    emu.set_status(world.repo, sha, "failure", "lint", description="E501")
    state = world.forge.ci_state(world.repo, sha)
    assert state.context("build") is not None and state.context("build").state == "success"
    assert state.state == "failure" and [c.name for c in state.failing] == ["lint"]
    assert state.required_state(["build"]) == "success"
    assert world.forge.ci_state(world.repo, "0" * 40).state == "none"  # exact SHA only

    if world.flavour == "github":  # check runs count too, and only GitHub has them
        emu.add_check_run(world.repo, sha, "tests", conclusion=None)
        emu.add_check_run(world.repo, sha, "docs", conclusion="skipped")
        runs = {c.name: c for c in world.forge.ci_state(world.repo, sha).contexts}
        assert (runs["tests"].state, runs["tests"].kind) == ("pending", "check")
        assert runs["docs"].state == "success"


def test_set_status_is_seen_by_ci_state(world: World) -> None:
    sha = world.emulator.push_branch(world.repo, "s", {"a": "1"}, as_user="orchestrator-bot")
    world.forge.set_status(world.repo, sha, "orchestrator/ai-review", "success",
                           "approved, confidence 0.95", "http://runner/runs/1")
    ctx = world.forge.ci_state(world.repo, sha).context("orchestrator/ai-review")
    assert ctx is not None
    assert (ctx.state, ctx.description, ctx.url) == (
        "success", "approved, confidence 0.95", "http://runner/runs/1")


def test_post_review_comment_with_line_findings(world: World) -> None:
    emu = world.emulator
    sha = emu.push_branch(world.repo, "rev", {"app.py": "print('x')\n"},
                          as_user="orchestrator-bot")
    pr = world.forge.find_or_create_pull(world.repo, "rev", "main", "t", "b")
    review_id = world.forge.post_review(world.repo, pr.number, "Two findings",
                                        [ReviewComment("app.py", 1, "use logging")], sha)
    reviews = emu.issue(world.repo, pr.number).pull.reviews  # type: ignore[union-attr]
    assert [(r.id, r.state, r.body, r.commit_id) for r in reviews] == [
        (review_id, "COMMENTED", "Two findings", sha)]
    assert reviews[0].comments[0]["path"] == "app.py"


def test_bad_token_is_an_auth_error_naming_the_env_var(world: World) -> None:
    stranger = world.adapter("not-a-real-token")
    with pytest.raises(ForgeAuthError, match=TOKEN_ENV[world.flavour]):
        stranger.get_issue(world.repo, 1)


def test_write_without_permission_names_the_env_var(world: World) -> None:
    number = world.emulator.open_issue(world.repo, "t", as_user="maintainer")
    reader = world.emulator.add_user("reader")
    world.emulator.grant(world.repo, "reader", "read")
    with pytest.raises(ForgeAuthError, match=TOKEN_ENV[world.flavour]):
        world.adapter(reader.token).add_label(world.repo, number, "orchestrator")


def test_clone_url_and_push_credentials_keep_the_token_out_of_urls(world: World) -> None:
    url = world.forge.clone_url(world.repo)
    assert url == world.emulator.clone_url(world.repo)
    creds = world.forge.push_credentials(world.repo)
    assert creds.token not in url and creds.token not in repr(creds)
    assert creds.git_config()["http.extraheader"].startswith("Authorization: Basic ")
