"""Signed deliveries that are malformed in ways a parser fears: deep nesting, huge numbers,
numbers of the wrong type. The webhook fuzz test's companion, for a runner of each flavour:
every one is answered 400 (never 5xx), queues nothing, and leaves no traceback in the log; the
public health endpoint says only whether the runner is healthy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from runner.forge.webhooks import sign
from runner.testing.demo import REPO, DemoWorld
from runner.wiring import Runner
from tests.faults.test_webhook_fuzz import app_world_of, labelled

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module", params=["github", "forgejo"])
def flavoured_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[tuple[DemoWorld, Runner, TestClient]]:
    """A wired runner with a forge of one flavour, behind the app (see ``app_world_of``)."""
    yield from app_world_of(tmp_path_factory, request.param)


def nested(depth: int, kind: str) -> bytes:
    """A convincing delivery with a field the runner does not read (``issue.milestone``) that
    nests ``depth`` containers deep."""
    inner = ("[" * depth + "]" * depth) if kind == "list" else \
        ('{"a":' * depth + "1" + "}" * depth)
    base = json.dumps(labelled(1))
    return base.replace('"state": "open"', f'"state": "open", "milestone": {inner}', 1).encode()


# Issue numbers no forge gives: too big for the forges' 32 bits (a 31-digit one reached the
# reconcile loop), not integers, or thousands of digits (Python's int parser refuses those).
bad_numbers = st.one_of(
    st.integers(min_value=2**31), st.integers(max_value=0),
    st.integers(10**30, 10**31 - 1), st.floats(allow_nan=False), st.booleans(),
    st.text(max_size=12), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def signed_post(client: TestClient, world: DemoWorld, forge: str, event: str,
                body: bytes) -> Any:
    name = "X-GitHub" if forge == "github" else "X-Forgejo"
    digest = sign(world.secret, body)
    headers = {f"{name}-Event": event,
               "X-Hub-Signature-256" if forge == "github" else "X-Forgejo-Signature":
               f"sha256={digest}" if forge == "github" else digest}
    return client.post(f"/webhooks/{forge}", content=body, headers=headers)


@pytest.mark.parametrize("depth", [65, 1000, 100_000, 700_000])  # 700k: just under 5 MB
@pytest.mark.parametrize("kind", ["list", "object"])
def test_deeply_nested_signed_bodies_answer_400(
        flavoured_world: tuple[DemoWorld, Runner, TestClient], depth: int, kind: str) -> None:
    world, runner, client = flavoured_world
    reply = signed_post(client, world, world.flavour, "issues", nested(depth, kind))
    assert reply.status_code == 400, reply.text
    assert "nests deeper" in reply.json()["message"] or "not JSON" in reply.json()["message"]
    assert len(runner.controller.queue) == 0


def test_a_body_of_ordinary_depth_is_still_accepted(
        flavoured_world: tuple[DemoWorld, Runner, TestClient]) -> None:
    world, runner, client = flavoured_world
    reply = signed_post(client, world, world.flavour, "issues", nested(20, "list"))
    assert reply.status_code == 202, reply.text
    key = runner.controller.queue.get(timeout=1)
    assert key == f"{REPO}#1"
    runner.controller.queue.done(key)


def test_huge_and_wrongly_typed_numbers_answer_400_and_never_reach_the_loop(
        flavoured_world: tuple[DemoWorld, Runner, TestClient],
        caplog: pytest.LogCaptureFixture) -> None:
    """A signed delivery whose numbers no forge gives is refused with 400 (not 500), queues
    nothing, and leaves no traceback in the log; the loop looks at every issue it was given."""
    world, runner, client = flavoured_world
    forge = world.flavour

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(number=bad_numbers,
           where=st.sampled_from(["issue", "pull", "check", "review", "review_comment"]))
    def deliver(number: Any, where: str) -> None:
        payload = labelled(1)
        event = "issues"
        if where == "issue":
            payload["issue"]["number"] = number
            payload.pop("number", None)
        elif where == "pull":
            event = "pull_request"
            payload["pull_request"] = {"number": number, "head": {"sha": "a" * 40}}
        elif where in ("review", "review_comment"):
            if where == "review_comment" and forge == "forgejo":
                return  # Forgejo announces reviews, not their line comments
            # Forgejo's review delivery by its event name (no X-Forgejo-Event-Type here)
            event = {"github": f"pull_request_{where}", "forgejo": "pull_request_rejected"}[forge]
            payload["pull_request"] = {"number": number, "head": {"sha": "a" * 40}}
            payload["review"] = {"id": 7, "state": "changes_requested", "type": "x"}
            payload["comment"] = {"body": "fix", "pull_request_review_id": 7}
        else:
            if forge == "forgejo":
                return  # Forgejo sends no check runs
            event = "check_run"
            payload["check_run"] = {"head_sha": "a" * 40, "pull_requests": [{"number": number}]}
        reply = signed_post(client, world, forge, event, json.dumps(payload).encode())
        assert reply.status_code == 400, (number, reply.text)
        assert len(runner.controller.queue) == 0

    with caplog.at_level("DEBUG"):
        deliver()
        # thousands of digits: Python refuses to read them (a ValueError, still a 400)
        reply = signed_post(client, world, forge, "issues",
                            json.dumps(labelled(1)).replace('"number": 1',
                                                            '"number": ' + "9" * 5000).encode())
        assert reply.status_code == 400, reply.text
        # the largest number a forge gives is looked at, and the loop answers for it
        reply = signed_post(client, world, forge, "issues",
                            json.dumps(labelled(2**31 - 1)).encode())
        assert reply.status_code == 202, reply.text
        key = runner.controller.queue.get(timeout=1)
        assert key is not None
        runner.controller.reconcile(key)
        runner.controller.queue.done(key)
    assert not [r for r in caplog.records if r.exc_info], "a traceback reached the log"


def test_healthz_says_only_healthy_without_the_token(
        flavoured_world: tuple[DemoWorld, Runner, TestClient]) -> None:
    world, _runner, client = flavoured_world
    public = client.get("/healthz")
    assert public.status_code == 200 and public.json() == {"ok": True}
    token = world.env["DEMO_API_TOKEN"]
    full = client.get("/healthz", headers={"Authorization": f"Bearer {token}"}).json()
    assert full["ok"] is True and {"worker", "runs", "queue", "slots"} <= set(full)
    wrong = client.get("/healthz", headers={"Authorization": "Bearer nope"}).json()
    assert wrong == {"ok": True}
