"""Pull request reviews on the emulator, held to the published contracts: reviews by people
(REST upper-case states, create answering 200), line comments with the real diff's hunk,
replies (GitHub's replies endpoint, Forgejo's review comments), merging and closing, the
mergeable flag, and the webhooks each forge sends for them. Every API answer is validated by
the ``world`` fixture's checker; webhook payloads are validated here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from runner.testing import forge_git
from runner.testing.forge import Delivery
from tests.contract.forge.conftest import World
from tests.contract.forge.schemas import forgejo_contract, webhook_contract

BEFORE = "".join(f"line {n}\n" for n in range(1, 31))
AFTER = BEFORE.replace("line 5\n", "line 5 changed\n").replace("line 25\n", "line 25 changed\n")
SECRET = "s3cret"


def _open_pull(world: World) -> int:
    """A bot's PR changing two files: ``a.py`` lines 5 and 25, ``b.py`` line 2 added."""
    emu = world.emulator
    emu.push_branch(world.repo, "main", {"a.py": BEFORE, "b.py": "x = 1\n"},
                    as_user="maintainer", message="Add files")
    emu.push_branch(world.repo, "fix", {"a.py": AFTER, "b.py": "x = 1\ny = 2\n"},
                    as_user="orchestrator-bot")
    emu.add_webhook(world.repo, None, SECRET)  # record what is sent
    return world.forge.find_or_create_pull(world.repo, "fix", "main", "Fix", "body").number


def _api(world: World, method: str, path: str, user: str, json: Any = None) -> httpx.Response:
    token = world.emulator.state.user(user).token
    return httpx.request(method, f"{world.emulator.api_url}/repos/{world.repo}{path}",
                         json=json, headers={"Authorization": f"token {token}"})


def _sent(world: World, since: int) -> list[Delivery]:
    return list(world.emulator.deliveries[since:])


def test_a_review_with_line_comments_on_two_files(world: World) -> None:
    number = _open_pull(world)
    emu = world.emulator
    review_id = emu.review(world.repo, number, "maintainer", "request_changes", "Please fix",
                           comments=[("a.py", 5, "why?"), ("a.py", 25, "and this"),
                                     ("b.py", 2, "name it")])
    reviews = world.forge.list_reviews(world.repo, number)
    assert [(r.id, r.author, r.state, r.body) for r in reviews] == [
        (review_id, "maintainer", "changes_requested", "Please fix")]
    assert reviews[0].commit_sha == world.forge.get_pull(world.repo, number).head_sha

    comments = world.forge.list_line_comments(world.repo, number)
    assert [(c.path, c.line, c.body, c.review_id, c.in_reply_to, c.author) for c in comments] \
        == [("a.py", 5, "why?", review_id, None, "maintainer"),
            ("a.py", 25, "and this", review_id, None, "maintainer"),
            ("b.py", 2, "name it", review_id, None, "maintainer")]
    # The hunk is the real diff's, down to the commented line.
    assert comments[0].diff_hunk.splitlines()[-2:] == ["-line 5", "+line 5 changed"]
    assert "@@ -22,7 +22,7 @@" in comments[1].diff_hunk
    assert comments[2].diff_hunk.endswith("+y = 2")

    raw = _api(world, "GET", f"/pulls/{number}/reviews", "maintainer").json()
    assert raw[0]["state"] == ("CHANGES_REQUESTED" if world.flavour == "github"
                               else "REQUEST_CHANGES")


def test_people_review_through_the_api_with_their_own_token(world: World) -> None:
    number = _open_pull(world)
    github = world.flavour == "github"
    approve = "APPROVE" if github else "APPROVED"
    made = _api(world, "POST", f"/pulls/{number}/reviews", "contributor",
                {"body": "LGTM", "event": approve})
    assert made.status_code == 200 and made.json()["state"] == "APPROVED"
    if not github:  # Forgejo: GitHub's word leaves the review pending
        pending = _api(world, "POST", f"/pulls/{number}/reviews", "maintainer",
                       {"body": "hm", "event": "APPROVE"})
        assert pending.status_code == 200 and pending.json()["state"] == "PENDING"
        assert [r.state for r in world.forge.list_reviews(world.repo, number)] == ["approved"]
    line = ({"path": "a.py", "line": 5, "side": "RIGHT", "body": "nit"} if github
            else {"path": "a.py", "new_position": 5, "body": "nit"})
    commented = _api(world, "POST", f"/pulls/{number}/reviews", "maintainer",
                     {"body": "", "event": "COMMENT", "comments": [line]})
    assert commented.status_code == 200
    assert commented.json()["state"] == ("COMMENTED" if github else "COMMENT")
    # Nobody approves their own pull request.
    own = world.adapter(world.emulator.state.user("orchestrator-bot").token)
    author = world.forge.get_pull(world.repo, number).author
    assert author == world.bot_login
    if world.app is None:
        refused = _api(world, "POST", f"/pulls/{number}/reviews", "orchestrator-bot",
                       {"body": "mine", "event": approve})
        assert refused.status_code == 422
    assert [r.author for r in own.list_reviews(world.repo, number)] == ["contributor",
                                                                        "maintainer"]


def test_replies_join_the_thread(world: World) -> None:
    number = _open_pull(world)
    emu = world.emulator
    review_id = emu.review(world.repo, number, "maintainer", "request_changes", "Fix these",
                           comments=[("a.py", 5, "first"), ("b.py", 2, "second")])
    first, second = world.forge.list_line_comments(world.repo, number)
    answer = world.forge.reply_to_line_comment(world.repo, number, first, "Done in abc123")
    assert (answer.path, answer.line, answer.in_reply_to, answer.author) == (
        "a.py", 5, first.id, world.bot_login)
    again = emu.reply(world.repo, number, answer.id, "maintainer", "Thanks")  # to the reply
    listed = world.forge.list_line_comments(world.repo, number)
    assert [(c.id, c.in_reply_to) for c in listed] == [
        (first.id, None), (second.id, None), (answer.id, first.id), (again, first.id)]
    if world.flavour == "github":  # each reply is a review of its own
        assert answer.review_id not in (None, review_id)
        raw = _api(world, "GET", f"/pulls/{number}/comments", "maintainer").json()
        assert [c.get("in_reply_to_id") for c in raw] == [None, None, first.id, first.id]
    else:  # Forgejo: the reply is a code comment of the answered review, at its line
        assert answer.review_id == review_id
        raw = _api(world, "GET", f"/pulls/{number}/reviews/{review_id}/comments",
                   "maintainer").json()
        assert [(c["path"], c["position"], c["original_position"]) for c in raw] == [
            ("a.py", 5, 0), ("b.py", 2, 0), ("a.py", 5, 0), ("a.py", 5, 0)]
        assert all("in_reply_to_id" not in c for c in raw)


def test_mergeable_follows_the_base_and_merging_makes_a_merge_commit(world: World) -> None:
    number = _open_pull(world)
    emu = world.emulator
    assert world.forge.get_pull(world.repo, number).mergeable is True
    emu.commit_to_base(world.repo, "b.py", "x = 100\n", "Change x on main")
    assert world.forge.get_pull(world.repo, number).mergeable is False
    merge = (("PUT", {"merge_method": "merge"}) if world.flavour == "github"
             else ("POST", {"Do": "merge"}))
    refused = _api(world, merge[0], f"/pulls/{number}/merge", "maintainer", merge[1])
    assert refused.status_code == 405
    emu.push_branch(world.repo, "fix", {"b.py": "x = 100\n"}, as_user="orchestrator-bot",
                    message="Take main's x")  # the same text on both sides: no conflict
    assert world.forge.get_pull(world.repo, number).mergeable is True
    base_before = emu.branch_sha(world.repo, "main")
    since = len(emu.deliveries)
    done = _api(world, merge[0], f"/pulls/{number}/merge", "maintainer", merge[1])
    assert done.status_code == 200
    pull = world.forge.get_pull(world.repo, number)
    assert (pull.merged, pull.state) == (True, "closed")
    tip = emu.branch_sha(world.repo, "main")
    assert tip is not None and tip != base_before
    parents = forge_git.git("rev-list", "--parents", "-n", "1", tip,
                            cwd=emu.repo(world.repo).git_dir).split()
    assert parents[1:] == [base_before, pull.head_sha]  # a merge commit of base and head
    closed = [d.json() for d in _sent(world, since) if d.event == "pull_request"]
    assert [(p["action"], p["pull_request"]["merged"]) for p in closed] == [("closed", True)]
    assert _api(world, merge[0], f"/pulls/{number}/merge", "maintainer",
                merge[1]).status_code == 405  # already merged


def test_closing_without_merging(world: World) -> None:
    number = _open_pull(world)
    since = len(world.emulator.deliveries)
    closed = _api(world, "PATCH", f"/pulls/{number}", "maintainer", {"state": "closed"})
    assert closed.status_code in (200, 201)
    pull = world.forge.get_pull(world.repo, number)
    assert (pull.state, pull.merged) == ("closed", False)
    sent = [d.json() for d in _sent(world, since) if d.event == "pull_request"]
    assert [(p["action"], p["pull_request"]["merged"]) for p in sent] == [("closed", False)]


# ---------------------------------------------------------------- webhooks


@pytest.mark.parametrize("world", ["github"], indirect=True)
def test_github_review_webhooks_match_the_schemas(contracts: Path, world: World) -> None:
    number = _open_pull(world)
    emu = world.emulator
    since = len(emu.deliveries)
    emu.review(world.repo, number, "maintainer", "request_changes", "Please fix",
               comments=[("a.py", 5, "why?")])
    first = world.forge.list_line_comments(world.repo, number)[0]
    world.forge.reply_to_line_comment(world.repo, number, first, "Done")
    emu.comment_on_pull(world.repo, number, "maintainer", "@orchestrator-bot and docs")
    emu.merge_pull(world.repo, number, "maintainer")
    pushed = [d for d in _sent(world, since) if d.event == "push"]  # the merge moved main
    assert [d.json()["ref"] for d in pushed] == ["refs/heads/main"]
    sent = [d for d in _sent(world, since) if d.event != "push"]  # push: not in the subset
    contract = webhook_contract(contracts)
    names = [contract.validate(d.event, d.json()) for d in sent]
    assert names == ["pull-request-review-comment-created", "pull-request-review-submitted",
                     "pull-request-review-comment-created", "pull-request-review-submitted",
                     "issue-comment-created", "pull-request-closed"]
    review, reply = sent[1].json()["review"], sent[2].json()["comment"]
    assert review["state"] == "changes_requested" and isinstance(review["id"], int)
    assert reply["in_reply_to_id"] == first.id
    assert sent[3].json()["review"]["state"] == "commented"
    assert "pull_request" in sent[4].json()["issue"]
    assert sent[5].json()["pull_request"]["merged"] is True


def _forgejo_valid(contracts: Path, definition: str, value: Any) -> None:
    contract = forgejo_contract(contracts)
    schema = {"$ref": f"urn:forgejo#/definitions/{definition}"}
    errors = list(jsonschema.Draft4Validator(schema, registry=contract.registry)
                  .iter_errors(value))
    assert not errors, f"{definition}: {errors[0].message[:300]}"


@pytest.mark.parametrize("world", ["forgejo"], indirect=True)
@pytest.mark.parametrize(("state", "fine", "coarse"), [
    ("approve", "pull_request_review_approved", "pull_request_approved"),
    ("request_changes", "pull_request_review_rejected", "pull_request_rejected"),
    ("comment", "pull_request_review_comment", "pull_request_comment")])
def test_forgejo_review_deliveries_carry_the_type_and_no_review_id(
        world: World, contracts: Path, state: str, fine: str, coarse: str) -> None:
    number = _open_pull(world)
    since = len(world.emulator.deliveries)
    world.emulator.review(world.repo, number, "maintainer", state, "Words",
                          comments=[("a.py", 5, "here")])
    (sent,) = _sent(world, since)  # one event for the review, none per line comment
    assert (sent.headers["X-Forgejo-Event"], sent.headers["X-Forgejo-Event-Type"],
            sent.headers["X-GitHub-Event"]) == (coarse, fine, coarse)
    payload = sent.json()
    assert set(payload) == {"action", "number", "pull_request", "requested_reviewer",
                            "repository", "sender", "commit_id", "review"}
    assert payload["action"] == "reviewed" and payload["number"] == number
    assert payload["review"] == {"type": fine, "content": "Words"}  # no id
    _forgejo_valid(contracts, "PullRequest", payload["pull_request"])
    _forgejo_valid(contracts, "User", payload["requested_reviewer"])
    assert payload["requested_reviewer"]["login"] == "maintainer"


@pytest.mark.parametrize("world", ["forgejo"], indirect=True)
def test_forgejo_pull_request_comments_and_ui_replies(world: World, contracts: Path) -> None:
    number = _open_pull(world)
    emu = world.emulator
    emu.review(world.repo, number, "maintainer", "comment", "", comments=[("a.py", 5, "q")])
    first = world.forge.list_line_comments(world.repo, number)[0]
    since = len(emu.deliveries)
    world.forge.reply_to_line_comment(world.repo, number, first, "by the API")  # no event
    emu.reply(world.repo, number, first.id, "maintainer", "by hand")
    emu.comment_on_pull(world.repo, number, "maintainer", "in the conversation")
    sent = _sent(world, since)
    assert [(d.headers["X-Forgejo-Event"], d.headers["X-Forgejo-Event-Type"])
            for d in sent] == [("issue_comment", "pull_request_comment")] * 2
    for delivery, text in zip(sent, ["by hand", "in the conversation"], strict=True):
        payload = delivery.json()
        assert payload["is_pull"] is True and payload["comment"]["body"] == text
        assert payload["issue"]["number"] == number
        _forgejo_valid(contracts, "Comment", payload["comment"])
        _forgejo_valid(contracts, "PullRequest", payload["pull_request"])


def test_dismissing_an_approval_or_a_change_request(world: World) -> None:
    number = _open_pull(world)
    emu = world.emulator
    asked = emu.review(world.repo, number, "maintainer", "request_changes", "No")
    commented = emu.review(world.repo, number, "contributor", "comment", "Hm")
    since = len(emu.deliveries)
    github = world.flavour == "github"
    verb = "PUT" if github else "POST"
    refused = _api(world, verb, f"/pulls/{number}/reviews/{commented}/dismissals",
                   "maintainer", {"message": "no"})
    assert refused.status_code == (422 if github else 403)  # only approvals and rejections
    if not github:  # Forgejo: repository admins only
        assert _api(world, verb, f"/pulls/{number}/reviews/{asked}/dismissals", "contributor",
                    {"message": "no"}).status_code == 403
    done = _api(world, verb, f"/pulls/{number}/reviews/{asked}/dismissals", "maintainer",
                {"message": "Handled in the follow-up"})
    assert done.status_code == 200
    assert done.json()["state" if github else "dismissed"] == ("DISMISSED" if github else True)
    assert [(r.id, r.state) for r in world.forge.list_reviews(world.repo, number)] == [
        (asked, "dismissed"), (commented, "commented")]
    sent = [(d.event, d.json().get("action")) for d in _sent(world, since)]
    assert sent == ([("pull_request_review", "dismissed")] if github else [])  # Forgejo: none
