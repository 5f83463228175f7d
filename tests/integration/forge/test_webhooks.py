"""Webhook deliveries as each forge sends them (emulator-made, really signed), through
``handle_delivery``: the answer a forge gets and the event the runner acts on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.forge.webhooks import MAX_BODY, DeliveryDedup, WebhookResult, handle_delivery, sign
from runner.testing.forge import Delivery, ForgeEmulator
from tests.conftest import missing
from tests.contract.forge.conftest import make_adapter
from tests.contract.forge.schemas import contracts_dir

SECRET = "s3cret"


def _deliveries(flavour: str, tmp_path: Path) -> list[Delivery]:
    with ForgeEmulator(flavour, tmp_path) as emu:  # type: ignore[arg-type]
        emu.add_user("maintainer")
        emu.create_repo("maintainer/app")
        emu.add_webhook("maintainer/app", None, SECRET)
        number = emu.open_issue("maintainer/app", "t", as_user="maintainer")
        emu.label("maintainer/app", number, "orchestrator", as_user="maintainer")
        emu.comment("maintainer/app", number, "/kill", as_user="maintainer")
        return list(emu.deliveries)


@pytest.mark.parametrize("flavour", ["github", "forgejo"])
def test_valid_signed_deliveries_become_events(flavour: str, tmp_path: Path) -> None:
    opened, labeled, commented = _deliveries(flavour, tmp_path)
    results = [handle_delivery(d.headers, d.body, SECRET, seen=DeliveryDedup())
               for d in (opened, labeled, commented)]
    assert [r.status for r in results] == [202, 202, 202]
    events = [r.event for r in results]
    assert all(e is not None and e.forge == flavour and e.repo == "maintainer/app"
               and e.number == 1 and e.actor == "maintainer" for e in events)
    assert [e.kind for e in events if e] == ["issue", "issue", "comment"]
    assert events[2] is not None and events[2].comment_body == "/kill"
    assert events[1] is not None and events[1].delivery == labeled.id
    if flavour == "github":
        assert events[1].action == "labeled" and events[1].label == "orchestrator"
    else:  # Forgejo: label_updated, and it does not say which label
        assert events[1].action == "label_updated" and events[1].label is None
        assert "label" not in labeled.json()


def test_forgejo_headers_win_over_the_github_ones_it_also_sends(tmp_path: Path) -> None:
    delivery = _deliveries("forgejo", tmp_path)[0]
    assert "X-GitHub-Event" in delivery.headers and "X-Hub-Signature-256" in delivery.headers
    result = handle_delivery(delivery.headers, delivery.body, SECRET)
    assert result.event is not None and result.event.forge == "forgejo"
    assert handle_delivery(delivery.headers, delivery.body, SECRET, expect="github").status == 400


@pytest.mark.parametrize("flavour", ["github", "forgejo"])
def test_bad_or_missing_signature_is_401(flavour: str, tmp_path: Path) -> None:
    delivery = _deliveries(flavour, tmp_path)[0]
    assert handle_delivery(delivery.headers, delivery.body, "wrong").status == 401
    unsigned = {k: v for k, v in delivery.headers.items() if "Signature" not in k}
    assert handle_delivery(unsigned, delivery.body, SECRET).status == 401
    tampered = delivery.body.replace(b'"t"', b'"x"')
    assert handle_delivery(delivery.headers, tampered, SECRET).status == 401
    assert handle_delivery(delivery.headers, delivery.body, None).status == 401


def test_a_repeated_delivery_is_200_and_acted_on_once(tmp_path: Path) -> None:
    delivery = _deliveries("github", tmp_path)[1]
    seen = DeliveryDedup()
    first = handle_delivery(delivery.headers, delivery.body, SECRET, seen=seen)
    again = handle_delivery(delivery.headers, delivery.body, SECRET, seen=seen)
    assert (first.status, first.accepted) == (202, True)
    assert (again.status, again.accepted) == (200, False)


def test_oversized_body_is_413_before_anything_else() -> None:
    body = b"{" + b" " * MAX_BODY + b"}"
    headers = {"X-GitHub-Event": "issues", "X-Hub-Signature-256": "sha256=" + sign(SECRET, body)}
    assert handle_delivery(headers, body, SECRET).status == 413


@pytest.mark.parametrize("flavour", ["github", "forgejo"])
def test_malformed_json_is_400(flavour: str) -> None:
    body = b"{not json"
    if flavour == "github":
        headers = {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "d1",
                   "X-Hub-Signature-256": "sha256=" + sign(SECRET, body)}
    else:
        headers = {"X-Forgejo-Event": "issues", "X-Forgejo-Delivery": "d1",
                   "X-Forgejo-Signature": sign(SECRET, body)}
    assert handle_delivery(headers, body, SECRET).status == 400


def test_forgejo_label_updated_without_a_label_names_the_issue() -> None:
    payload = {"action": "label_updated", "number": 7, "commit_id": "",
               "issue": {"number": 7, "labels": []},
               "repository": {"full_name": "o/r"}, "sender": {"login": "maintainer"}}
    body = json.dumps(payload).encode()
    headers = {"X-Forgejo-Event": "issues", "X-Forgejo-Event-Type": "issue_label",
               "X-Forgejo-Delivery": "abc", "X-Forgejo-Signature": sign(SECRET, body)}
    result = handle_delivery(headers, body, SECRET)
    assert result.status == 202 and result.event is not None
    assert (result.event.number, result.event.label, result.event.kind) == (7, None, "issue")


@pytest.mark.parametrize("event", ["release", "fork", "create"])
def test_unknown_event_is_202_and_ignored(event: str) -> None:
    body = json.dumps({"repository": {"full_name": "o/r"}}).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": "u1",
               "X-Hub-Signature-256": "sha256=" + sign(SECRET, body)}
    result = handle_delivery(headers, body, SECRET, seen=DeliveryDedup())
    assert (result.status, result.accepted) == (202, False)
    assert "ignored" in result.message


# ---------------------------------------------------------------- pull request reviews


def _examples(event: str) -> list[Path]:
    root = contracts_dir()
    if root is None:
        missing("the forge contracts are not at ../shared/contracts beside the clone "
                "(or $ORCHESTRATOR_CONTRACTS); they come with the project's CI checkout")
    assert root is not None
    found = sorted((root / "github" / "webhook-examples" / event).glob("*.json"))
    assert found, f"no {event} examples in the contracts"
    return found


def _github(event: str, body: bytes) -> WebhookResult:
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": "d-1",
               "X-Hub-Signature-256": "sha256=" + sign(SECRET, body)}
    return handle_delivery(headers, body, SECRET)


def test_github_review_examples_become_review_events() -> None:
    for path in _examples("pull_request_review"):
        payload = json.loads(path.read_bytes())
        event = _github("pull_request_review", path.read_bytes()).event
        assert event is not None, path.name
        assert (event.kind, event.action, event.number) == (
            "review", payload["action"], payload["pull_request"]["number"])
        assert event.review_state == payload["review"]["state"].lower()
        assert event.review_id == payload["review"]["id"]
        assert event.sha == payload["pull_request"]["head"]["sha"] and not event.on_pull
    events = [_github("pull_request_review", p.read_bytes()).event
              for p in _examples("pull_request_review")]
    assert {e.review_state for e in events if e} == {"commented", "dismissed"}


def test_github_review_comment_examples_are_comments_on_the_pull() -> None:
    for path in _examples("pull_request_review_comment"):
        payload = json.loads(path.read_bytes())
        event = _github("pull_request_review_comment", path.read_bytes()).event
        assert event is not None, path.name
        assert (event.kind, event.on_pull, event.number) == (
            "comment", True, payload["pull_request"]["number"])
        assert event.comment_body == payload["comment"]["body"]
        assert event.review_id == payload["comment"]["pull_request_review_id"]


def test_github_closed_example_is_not_merged_and_a_merged_one_is() -> None:
    (path,) = [p for p in _examples("pull_request") if p.name == "closed.payload.json"]
    payload = json.loads(path.read_bytes())
    plain = _github("pull_request", path.read_bytes()).event
    assert plain is not None and (plain.kind, plain.action, plain.merged) == ("pull", "closed",
                                                                              False)
    payload["pull_request"]["merged"] = True
    merged = _github("pull_request", json.dumps(payload).encode()).event
    assert merged is not None and merged.merged
    for other in _examples("pull_request"):
        event = _github("pull_request", other.read_bytes()).event
        assert event is not None and not event.merged, other.name


def test_github_review_thread_events_are_ignored() -> None:
    for path in _examples("pull_request_review_thread"):
        assert _github("pull_request_review_thread", path.read_bytes()).status == 202
        assert _github("pull_request_review_thread", path.read_bytes()).event is None


@pytest.mark.parametrize("flavour", ["github", "forgejo"])
def test_emulated_review_deliveries_become_events(flavour: str, tmp_path: Path) -> None:
    with ForgeEmulator(flavour, tmp_path) as emu:  # type: ignore[arg-type]
        emu.add_user("maintainer")
        emu.add_user("bot")
        emu.create_repo("maintainer/app", files={"a.py": "a = 1\n"})
        emu.grant("maintainer/app", "bot", "write")
        emu.push_branch("maintainer/app", "fix", {"a.py": "a = 2\n"}, as_user="bot")
        number = make_adapter(flavour, emu, emu.state.user("bot").token).find_or_create_pull(
            "maintainer/app", "fix", "main", "Fix", "body").number
        issue = emu.open_issue("maintainer/app", "t", as_user="maintainer")
        emu.add_webhook("maintainer/app", None, SECRET)
        for state in ("approve", "request_changes", "comment"):
            emu.review("maintainer/app", number, "maintainer", state, f"said {state}",
                       comments=[("a.py", 1, "here")])
        emu.comment_on_pull("maintainer/app", number, "maintainer", "@bot please")
        emu.comment("maintainer/app", issue, "on the issue", as_user="maintainer")
        emu.merge_pull("maintainer/app", number, "maintainer")
        events = [handle_delivery(d.headers, d.body, SECRET).event for d in emu.deliveries]
    assert all(e is not None and e.actor == "maintainer" for e in events)
    reviews = [e for e in events if e and e.kind == "review"]
    assert [(e.review_state, e.number, e.comment_body) for e in reviews] == [
        ("approved", number, "said approve"), ("changes_requested", number,
                                               "said request_changes"),
        ("commented", number, "said comment")]
    if flavour == "github":
        assert all(e.review_id for e in reviews)
    else:  # Forgejo's review deliveries name no review
        assert all(e.review_id is None and e.action == "reviewed" for e in reviews)
    comments = [(e.number, e.on_pull, e.comment_body) for e in events if e and e.kind == "comment"]
    per_line = 3 if flavour == "github" else 0  # GitHub announces each line comment too
    assert comments == [(number, True, "here")] * per_line + [
        (number, True, "@bot please"), (issue, False, "on the issue")]
    closed = [e for e in events if e and e.kind == "pull" and e.action == "closed"]
    assert [(e.number, e.merged) for e in closed] == [(number, True)]


@pytest.mark.parametrize("review", [{"state": 3, "id": 1}, {"state": "approved", "id": "1"},
                                    {"state": "approved", "id": -4}, {"id": 1}])
def test_a_malformed_review_is_400(review: dict[str, object]) -> None:
    payload = {"action": "submitted", "review": review, "repository": {"full_name": "o/r"},
               "pull_request": {"number": 2, "head": {"sha": "abc", "ref": "fix"}},
               "sender": {"login": "maintainer"}}
    assert _github("pull_request_review", json.dumps(payload).encode()).status == 400


def test_a_forgejo_review_without_the_type_header_is_read_from_the_event_name() -> None:
    payload = {"action": "reviewed", "number": 3, "pull_request": {"number": 3},
               "repository": {"full_name": "o/r"}, "sender": {"login": "m"},
               "review": {"type": "pull_request_review_rejected", "content": "no"}}
    body = json.dumps(payload).encode()
    headers = {"X-Gitea-Event": "pull_request_rejected", "X-Gitea-Delivery": "g-1",
               "X-Gitea-Signature": sign(SECRET, body)}
    event = handle_delivery(headers, body, SECRET).event
    assert event is not None and (event.kind, event.review_state, event.number) == (
        "review", "changes_requested", 3)


@pytest.mark.parametrize("flavour", ["github", "forgejo"])
def test_pushes_become_push_events_with_the_branch_and_its_new_head(flavour: str,
                                                                    tmp_path: Path) -> None:
    with ForgeEmulator(flavour, tmp_path) as emu:  # type: ignore[arg-type]
        emu.add_user("maintainer")
        emu.create_repo("maintainer/app", files={"a.py": "a = 1\n"})
        emu.add_webhook("maintainer/app", None, SECRET)
        on_base = emu.commit_to_base("maintainer/app", "b.py", "b = 1\n", "Add b")
        on_branch = emu.push_branch("maintainer/app", "fix", {"a.py": "a = 2\n"},
                                    as_user="maintainer")
        pushes = [d for d in emu.deliveries if d.event == "push"]
    events = [handle_delivery(d.headers, d.body, SECRET).event for d in pushes]
    assert [(e.kind, e.branch, e.sha, e.actor) for e in events if e] == [
        ("push", "main", on_base, "maintainer"), ("push", "fix", on_branch, "maintainer")]
    first = pushes[0].json()
    assert first["head_commit"]["id"] == on_base and first["head_commit"]["added"] == ["b.py"]
    if flavour == "forgejo":
        assert pushes[0].headers["X-Forgejo-Event-Type"] == "push"
        assert first["total_commits"] == 1 and "compare_url" in first
    else:
        assert first["created"] is False and first["pusher"]["name"] == "maintainer"


@pytest.mark.parametrize("change", [{"ref": "refs/tags/v1"}, {"after": "0" * 40}])
def test_a_pushed_tag_or_a_deleted_branch_is_ignored(change: dict[str, str]) -> None:
    payload = {"ref": "refs/heads/main", "before": "1" * 40, "after": "a" * 40,
               "repository": {"full_name": "o/r"}, "sender": {"login": "maintainer"},
               **change}
    result = _github("push", json.dumps(payload).encode())
    assert (result.status, result.event) == (202, None)


@pytest.mark.parametrize("change", [{"after": "main"}, {"after": 7}, {"ref": None},
                                    {"ref": "refs/heads/"}, {"ref": "refs/heads/a\nb"},
                                    {"ref": "refs/heads/" + "x" * 300}, {"repository": []}])
def test_a_malformed_push_is_400(change: dict[str, object]) -> None:
    payload = {"ref": "refs/heads/main", "before": "1" * 40, "after": "a" * 40,
               "repository": {"full_name": "o/r"}, "sender": {"login": "maintainer"},
               **change}
    assert _github("push", json.dumps(payload).encode()).status == 400
