"""Webhook deliveries as each forge sends them (emulator-made, really signed), through
``handle_delivery``: the answer a forge gets and the event the runner acts on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.forge.webhooks import MAX_BODY, DeliveryDedup, handle_delivery, sign
from runner.testing.forge import Delivery, ForgeEmulator

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


@pytest.mark.parametrize("event", ["push", "release", "fork"])
def test_unknown_event_is_202_and_ignored(event: str) -> None:
    body = json.dumps({"repository": {"full_name": "o/r"}}).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": "u1",
               "X-Hub-Signature-256": "sha256=" + sign(SECRET, body)}
    result = handle_delivery(headers, body, SECRET, seen=DeliveryDedup())
    assert (result.status, result.accepted) == (202, False)
    assert "ignored" in result.message
