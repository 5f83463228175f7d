"""Webhook fuzzing: random headers, bodies and signatures against the real Starlette app.

Whatever arrives, the runner answers without a 5xx and without crashing, and a delivery that
is unsigned or signed with another secret never puts an issue on the work queue (so it can
never start a run), however convincing its body is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from runner.config import Settings
from runner.forge.webhooks import sign
from runner.server import create_app
from runner.testing.demo import MAINTAINER, REPO, DemoWorld
from runner.wiring import Runner, build

pytestmark = [pytest.mark.slow]

EXAMPLES = 2000
EVENT_HEADERS = ["X-GitHub-Event", "X-Forgejo-Event", "X-Gitea-Event"]
SIGNATURE_HEADERS = ["X-Hub-Signature-256", "X-Forgejo-Signature", "X-Gitea-Signature"]
DELIVERY_HEADERS = ["X-GitHub-Delivery", "X-Forgejo-Delivery", "X-Gitea-Delivery"]
EVENTS = ["issues", "issue_comment", "pull_request", "ping", "push", "label", "", "issues\x00"]


def app_world_of(tmp_path_factory: pytest.TempPathFactory, flavour: str
               ) -> Iterator[tuple[DemoWorld, Runner, TestClient]]:
    world = DemoWorld(tmp_path_factory.mktemp("fuzz"), sandbox="local", flavour=flavour,  # type: ignore[arg-type]
                      start_runner=False).start()
    try:
        runner = build(Settings.model_validate(world.settings_dict()), worker="fuzz")
        with TestClient(create_app(runner), raise_server_exceptions=True) as client:
            yield world, runner, client
    finally:
        world.stop()


@pytest.fixture(scope="module")
def app_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoWorld, Runner,
                                                                          TestClient]]:
    """A wired runner (controller loop not started) behind the app, in a Starlette client
    that re-raises any exception the app lets out: a crash fails the test."""
    yield from app_world_of(tmp_path_factory, "github")


def labelled(number: int, label: str = "orchestrator") -> dict[str, Any]:
    """A convincing `issues.labeled` payload for the configured repository."""
    return {"action": "labeled", "label": {"name": label},
            "issue": {"number": number, "title": "x", "body": "", "state": "open",
                      "labels": [{"name": label}], "user": {"login": MAINTAINER}},
            "repository": {"full_name": REPO, "name": REPO.split("/")[1],
                           "owner": {"login": REPO.split("/")[0]}},
            "sender": {"login": MAINTAINER}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 10**6).map(lambda n: json.dumps(labelled(n)).encode()),
    st.builds(lambda n, extra: json.dumps({**labelled(n), **extra}).encode(),
              st.integers(-5, 10**12), st.dictionaries(st.text(max_size=8), json_values,
                                                       max_size=3)),
)
# Header values as bytes: anything a client can put on the wire, non-ASCII included.
header_values = st.binary(max_size=80).filter(lambda b: b"\r" not in b and b"\n" not in b
                                              and b"\0" not in b).map(lambda b: b.strip())


@st.composite
def forged_signatures(draw: st.DrawFn, body: bytes, secret: str) -> bytes | None:
    """No signature, random bytes, or the HMAC of this body under another secret."""
    kind = draw(st.sampled_from(["none", "random", "other-secret", "other-body"]))
    if kind == "none":
        return None
    if kind == "random":
        return draw(header_values)
    if kind == "other-secret":
        other = draw(st.text(min_size=1, max_size=30).filter(lambda s: s != secret))
        digest = sign(other, body)
    else:
        digest = sign(secret, body + draw(st.binary(min_size=1, max_size=4)))
    prefix = draw(st.sampled_from(["sha256=", "", "SHA256=", "sha1="]))
    return (prefix + digest).encode()


@st.composite
def deliveries(draw: st.DrawFn, secret: str) -> tuple[str, dict[str, bytes], bytes]:
    forge = draw(st.sampled_from(["github", "forgejo", "gitlab", "github/../forgejo"]))
    body = draw(bodies)
    headers: dict[str, bytes] = {}
    for name in draw(st.lists(st.sampled_from(EVENT_HEADERS), max_size=2, unique=True)):
        headers[name] = draw(st.sampled_from(EVENTS).map(str.encode) | header_values)
    for name in draw(st.lists(st.sampled_from(DELIVERY_HEADERS), max_size=2, unique=True)):
        headers[name] = draw(header_values)
    signature = draw(forged_signatures(body, secret))
    if signature is not None:
        for name in draw(st.lists(st.sampled_from(SIGNATURE_HEADERS), min_size=1,
                                  max_size=3, unique=True)):
            headers[name] = signature
    headers["Content-Type"] = draw(st.sampled_from([b"application/json", b"text/plain",
                                                    b"application/x-www-form-urlencoded"]))
    return forge, headers, body


def test_unsigned_or_missigned_deliveries_never_queue_work(
        app_world: tuple[DemoWorld, Runner, TestClient]) -> None:
    world, runner, client = app_world
    tried = [0]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(delivery=deliveries(world.secret))
    def deliver(delivery: tuple[str, dict[str, bytes], bytes]) -> None:
        forge, headers, body = delivery
        tried[0] += 1
        reply = client.post(f"/webhooks/{forge}", content=body,
                           headers=[(k.encode(), v) for k, v in headers.items()])
        assert reply.status_code < 500, (reply.status_code, reply.text)
        assert reply.status_code in (400, 401, 404, 413), (reply.status_code, reply.text)
        assert len(runner.controller.queue) == 0, "an unverified delivery queued an issue"

    deliver()
    assert tried[0] >= EXAMPLES
    assert runner.store.list_runs(limit=10) == []


def test_signed_random_deliveries_never_5xx(
        app_world: tuple[DemoWorld, Runner, TestClient]) -> None:
    """Signed with the right secret but with random events and bodies: a 4xx or an accepted
    delivery, never a server error."""
    world, _runner, client = app_world

    @settings(max_examples=500, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(forge=st.sampled_from(["github", "forgejo"]), body=bodies,
           event=st.sampled_from(EVENTS[:6]), delivery=header_values)
    def deliver(forge: str, body: bytes, event: str, delivery: bytes) -> None:
        name = "X-GitHub" if forge == "github" else "X-Forgejo"
        digest = sign(world.secret, body)
        headers = {f"{name}-Event": event.encode(), f"{name}-Delivery": delivery,
                   "X-Hub-Signature-256" if forge == "github" else "X-Forgejo-Signature":
                   (f"sha256={digest}" if forge == "github" else digest).encode()}
        reply = client.post(f"/webhooks/{forge}", content=body,
                           headers=[(k.encode(), v) for k, v in headers.items()])
        assert reply.status_code < 500, (reply.status_code, reply.text)

    deliver()
