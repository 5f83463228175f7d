"""The control API over real HTTP against a wired runner with a real SQLite store."""

from __future__ import annotations

import json

import httpx

from runner.model import RunState
from runner.testing.demo import MAINTAINER, REPO
from tests.integration.api.conftest import ApiWorld

PROTECTED = [("GET", "/api/runs"), ("GET", "/api/runs/r-0123456789ab"),
             ("GET", "/api/runs/r-0123456789ab/events"), ("POST", "/api/runs/r-0123456789ab/kill"),
             ("POST", "/api/kill-all"), ("POST", "/api/resume"), ("POST", "/api/runs"),
             ("GET", "/metrics")]


def test_every_control_route_needs_the_token(api_world: ApiWorld) -> None:
    for token in (None, "wrong-token"):
        with api_world.client(token) as client:
            for method, path in PROTECTED:
                reply = client.request(method, path, json={"repo": REPO, "issue": 1})
                assert reply.status_code == 401, (method, path, reply.text)
                assert "DEMO_API_TOKEN" in reply.json()["error"]
    # nothing was killed, paused or dispatched anonymously
    assert api_world.runner.store.list_runs() == []
    assert api_world.runner.store.paused() is None


def test_unknown_run_is_404(api_world: ApiWorld) -> None:
    with api_world.client() as client:
        for method, path in [("GET", "/api/runs/r-0123456789ab"),
                             ("GET", "/api/runs/r-0123456789ab/events"),
                             ("POST", "/api/runs/r-0123456789ab/kill"),
                             ("GET", "/api/runs/not-a-run-id")]:
            reply = client.request(method, path)
            assert reply.status_code == 404, (method, path, reply.text)
            assert "no run" in reply.json()["error"]


def test_killing_a_finished_run_is_409(api_world: ApiWorld) -> None:
    store = api_world.runner.store
    run, _ = store.create_run(REPO, 7, trigger_actor=MAINTAINER)
    store.transition(run.id, RunState.QUEUED, RunState.FAILED, actor="test", reason="done")
    with api_world.client() as client:
        reply = client.post(f"/api/runs/{run.id}/kill", json={"reason": "too late"})
    assert reply.status_code == 409
    assert "already failed" in reply.json()["error"]
    assert store.kill_request(run.id) is None


def test_kill_dispatch_and_kill_all_are_audited_with_the_token_name(api_world: ApiWorld) -> None:
    world, store = api_world.world, api_world.runner.store
    issue = world.open_issue(label=False)
    with api_world.client() as client:
        created = client.post("/api/runs", json={"repo": REPO, "issue": issue})
        assert created.status_code == 201, created.text
        run = created.json()
        assert run["trigger_actor"] == "api:demo_api_token"
        killed = client.post(f"/api/runs/{run['id']}/kill", json={"reason": "wrong issue"})
        assert killed.status_code == 202
        assert killed.json() == {"run": run["id"], "actor": "api:demo_api_token",
                                 "reason": "wrong issue"}
        events = client.get(f"/api/runs/{run['id']}/events").json()
        kill = [e for e in events if e["kind"] == "kill_requested"]
        assert kill and kill[0]["actor"] == "api:demo_api_token"
        assert kill[0]["data"]["reason"] == "wrong issue"
        all_ = client.post("/api/kill-all", json={"reason": "incident"})
        assert all_.status_code == 202 and all_.json()["paused"] is True
        assert store.paused()["actor"] == "api:demo_api_token"
        assert client.post("/api/resume").json() == {"paused": False}
        assert store.paused() is None
        # dispatch refuses what it cannot do, with a message
        assert client.post("/api/runs", json={"repo": "nobody/else", "issue": 1}
                           ).status_code == 404
        assert client.post("/api/runs", json={"repo": REPO, "issue": 999}).status_code == 404
        assert client.post("/api/runs", json={"repo": REPO, "issue": "x"}).status_code == 400


def test_events_are_paged_and_streamed(api_world: ApiWorld) -> None:
    store = api_world.runner.store
    run, _ = store.create_run(REPO, 3, trigger_actor=MAINTAINER)
    for i in range(5):
        store.append_event(run.id, "note", {"i": i})
    with api_world.client() as client:
        page = client.get(f"/api/runs/{run.id}/events", params={"after": 2, "limit": 2}).json()
        assert [e["seq"] for e in page] == [3, 4]
        assert client.get(f"/api/runs/{run.id}/events", params={"limit": 0}).status_code == 400
        store.transition(run.id, RunState.QUEUED, RunState.CANCELLED, actor="t", reason="x")
        seen: list[dict[str, object]] = []
        ended = None
        with client.stream("GET", f"/api/runs/{run.id}/events", params={"after": 4},
                           headers={"Accept": "text/event-stream"}) as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            name = ""
            for line in reply.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name == "event":
                    seen.append(json.loads(line[6:]))
                elif line.startswith("data: ") and name == "end":
                    ended = json.loads(line[6:])
                    break
    assert [e["seq"] for e in seen] == [5, 6, 7][: len(seen)] and len(seen) >= 2
    assert seen[-1]["kind"] == "transition"
    assert ended == {"state": "cancelled"}


def test_dashboard_state_changes_need_the_csrf_header(api_world: ApiWorld) -> None:
    store = api_world.runner.store
    run, _ = store.create_run(REPO, 4, trigger_actor=MAINTAINER)
    with httpx.Client(base_url=api_world.url, timeout=10) as browser:
        assert browser.get("/runs").status_code == 303  # to the login form
        bad = browser.post("/login", data={"token": "nope", "next": "/runs"})
        assert bad.status_code == 401 and "orchestrator_session" not in bad.cookies
        good = browser.post("/login", data={"token": api_world.token,
                                            "next": "https://evil.example/"})
        assert good.status_code == 303 and good.headers["location"] == "/runs"
        cookie = good.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert api_world.token not in good.headers["set-cookie"]
        assert browser.get("/runs").status_code == 200
        # without the header (what a cross-site form would send): refused
        refused = browser.post(f"/api/runs/{run.id}/kill", json={"reason": "x"})
        assert refused.status_code == 403
        cross = browser.post(f"/api/runs/{run.id}/kill", json={"reason": "x"},
                             headers={"X-Orchestrator-Dashboard": "1",
                                      "Origin": "https://evil.example"})
        assert cross.status_code == 403
        assert store.kill_request(run.id) is None
        ok = browser.post(f"/api/runs/{run.id}/kill", json={"reason": "from the dashboard"},
                          headers={"X-Orchestrator-Dashboard": "1"})
        assert ok.status_code == 202
        assert ok.json()["actor"] == "dashboard:demo_api_token"


def test_a_sign_in_link_signs_in_once(api_world: ApiWorld) -> None:
    from runner.webauth import Auth

    auth = Auth("DEMO_API_TOKEN")  # what the playground prints: made with the token
    link = auth.sign_in_url(api_world.url, "/runs?state=active")
    assert api_world.token not in link
    with httpx.Client(timeout=10) as browser:
        opened = browser.get(link)
        assert opened.status_code == 200 and "Signed in" in opened.text
        assert 'content="0; url=/runs?state=active"' in opened.text
        cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get(f"{api_world.url}/runs").status_code == 200
    with httpx.Client(timeout=10) as other:  # the same link again, in another browser
        again = other.get(link)
        assert again.status_code == 403 and "used already" in again.text
        assert "set-cookie" not in again.headers
        assert other.get(f"{api_world.url}/runs").status_code == 303  # to the login form
        expired = other.get(auth.sign_in_url(api_world.url, "/runs", now=0))
        assert expired.status_code == 403 and "expired" in expired.text
        forged = link.replace("ticket=", "ticket=9").split("&")[0]
        assert other.get(forged).status_code == 403
        elsewhere = other.get(auth.sign_in_url(api_world.url, "https://evil.example/"))
        assert 'content="0; url=/runs"' in elsewhere.text  # never to another site


def test_todays_spend_is_served_for_the_live_refresh(api_world: ApiWorld) -> None:
    store = api_world.runner.store
    run, _ = store.create_run(REPO, 6, trigger_actor=MAINTAINER)
    with api_world.client() as client:
        page = client.get("/runs").text
        assert 'data-refresh="/runs/spend"' in page and "(UTC): $0.00" in page
        store.update_run(run.id, cost_usd=0.0105)  # the agent works: the run costs more
        assert "(UTC): $0.01 (no daily budget)" in client.get("/runs/spend").text
        assert "$0.0105" in client.get("/runs/rows").text
    with httpx.Client(base_url=api_world.url) as anonymous:
        assert anonymous.get("/runs/spend").status_code == 401


def test_pages_escape_untrusted_text(api_world: ApiWorld) -> None:
    store = api_world.runner.store
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    run, _ = store.create_run(REPO, 5, trigger_actor=MAINTAINER, issue_title=evil,
                              pr_url="javascript:alert(1)", pr_number=9)
    store.append_event(run.id, "agent.tool", {"tool": "bash", "input": {"command": evil},
                                              "output": evil, "exit_code": 0})
    store.append_event(run.id, "weird", {"x": evil})
    with api_world.client() as client:
        for path in ("/runs", f"/runs/{run.id}", "/runs/rows"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
            assert "javascript:" not in page.text, path
            assert "script-src 'self'" in page.headers["content-security-policy"]
        # shown as text (Jinja2 escapes a quote as &#34;)
        assert "&lt;script&gt;alert(&#34;x&#34;)" in client.get(f"/runs/{run.id}").text


def test_openapi_document_names_every_route(api_world: ApiWorld) -> None:
    with httpx.Client(base_url=api_world.url) as client:
        doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/events",
            "/api/runs/{run_id}/kill", "/api/kill-all", "/api/resume", "/healthz",
            "/metrics"} <= set(doc["paths"])
