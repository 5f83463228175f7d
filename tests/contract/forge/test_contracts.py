"""The contracts themselves: validation catches a broken answer, real GitHub recordings parse
through the GitHub adapter, and the webhooks the emulator sends match GitHub's schemas."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from runner.forge.base import Conflict, RetryPolicy
from runner.forge.github import GitHubForge
from runner.testing.forge import ForgeEmulator
from tests.contract.forge.schemas import (
    ContractViolation,
    close_world,
    forgejo_contract,
    github_contract,
    webhook_contract,
)


def _answer(emulator: ForgeEmulator, path: str) -> tuple[str, Any]:
    token = emulator.state.user("maintainer").token
    response = httpx.get(f"{emulator.api_url}{path}", headers={"Authorization": f"token {token}"})
    assert response.status_code == 200
    return path, response.json()


@pytest.mark.parametrize("flavour", ["github", "forgejo"])
@pytest.mark.parametrize("breakage", ["missing", "mistyped"])
def test_a_broken_answer_fails_validation(flavour: str, breakage: str, tmp_path: Path,
                                          contracts: Path) -> None:
    with ForgeEmulator(flavour, tmp_path) as emulator:  # type: ignore[arg-type]
        emulator.add_user("maintainer")
        emulator.create_repo("maintainer/app")
        emulator.open_issue("maintainer/app", "t", as_user="maintainer", labels=["x"])
        path, body = _answer(emulator, "/repos/maintainer/app/issues/1")

    def check(doc: Any) -> None:
        if flavour == "github":
            github_contract(contracts).validate("GET", path, {}, 200, json.dumps(doc).encode())
        else:
            forgejo_contract(contracts).validate("GET", path, 200, doc)

    check(body)  # the genuine answer passes
    broken = dict(body)
    if breakage == "missing":
        del broken["title"]
    else:
        broken["number"] = str(broken["number"])
    with pytest.raises(ContractViolation, match=r"title|number"):
        check(broken)
    if flavour == "forgejo":  # closed world: an extra field is a violation too
        with pytest.raises(ContractViolation, match="Additional properties"):
            check({**body, "surprise": 1})


# ---------------------------------------------------------------- recorded GitHub answers


def _key(path: str) -> tuple[str, str]:
    route, _, query = path.partition("?")
    page = next((p.split("=", 1)[1] for p in query.split("&") if p.startswith("page=")), "1")
    return route, page


class _Replay(BaseHTTPRequestHandler):
    """Answers with recorded api.github.com responses, rewritten to this server's address."""

    entries: list[dict[str, Any]] = []
    base = ""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        method = self.command.lower()
        full = self.path
        # The client adds its own query parameters: match on the path and the page.
        match = next((e for e in self.entries if e["method"] == method
                      and _key(e["path"]) == _key(full)), None)
        if match is None:
            self.send_response(404)
            self.end_headers()
            self.wfile.write(json.dumps({"message": f"Not Found (not recorded): {full}"}).encode())
            return
        body = b""
        if match["response"] not in ("", None):
            body = json.dumps(match["response"]).replace("https://api.github.com",
                                                         self.base).encode()
        self.send_response(match["status"])
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        link = match["headers"].get("link")
        if link:
            self.send_header("Link", link.replace("https://api.github.com", self.base))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def replay(contracts: Path) -> Iterator[tuple[str, type[_Replay]]]:
    recorded = contracts / "github" / "recorded"
    entries = []
    for path in sorted(recorded.glob("*.json")):
        entries.extend(json.loads(path.read_text()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    handler = type("Replay", (_Replay,), {"entries": entries, "base": base})
    server.RequestHandlerClass = handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base, handler
    server.shutdown()
    server.server_close()


def _adapter(base: str) -> GitHubForge:
    return GitHubForge("recorded", base_url=base, retry=RetryPolicy.off(), throttle=False)


def test_recorded_paginated_issues_parse_through_the_adapter(replay: tuple[str, Any]) -> None:
    forge = _adapter(replay[0])
    issues = list(forge.list_issues("octokit-fixture-org/paginate-issues", "any"))
    assert len(issues) == 13  # five recorded pages, followed through their Link headers
    assert [i.number for i in issues] == sorted((i.number for i in issues), reverse=True)
    assert all(i.title and i.author and i.state == "open" for i in issues)


def test_recorded_statuses_parse_through_the_adapter(replay: tuple[str, Any]) -> None:
    forge = _adapter(replay[0])
    sha = "0000000000000000000000000000000000000001"
    forge.set_status("octokit-fixture-org/create-status", sha, "example/1", "failure",
                     "create-status failure test", "https://example.com")
    commit = forge.gh.get_repo("octokit-fixture-org/create-status").get_commit(sha)
    combined = commit.get_combined_status()
    assert combined.state == "failure"
    assert {s.context: s.state for s in combined.statuses} == {"example/1": "failure",
                                                               "example/2": "success"}


def test_recorded_validation_error_becomes_a_conflict(replay: tuple[str, Any]) -> None:
    forge = _adapter(replay[0])
    with pytest.raises(Conflict, match="Validation Failed"):
        forge._call("create label foo", lambda: forge.gh.get_repo(
            "octokit-fixture-org/errors").create_label("foo", "invalid"))


def test_recorded_repository_and_labels_parse(replay: tuple[str, Any]) -> None:
    forge = _adapter(replay[0])
    repo = forge.gh.withLazy(False).get_repo("octokit-fixture-org/hello-world")
    assert repo.full_name == "octokit-fixture-org/hello-world" and repo.default_branch
    labels = [x.name for x in forge.gh.get_repo("octokit-fixture-org/labels").get_labels()]
    assert "bug" in labels


# ---------------------------------------------------------------- webhook payloads


def test_github_webhooks_sent_by_the_emulator_match_the_schemas(tmp_path: Path,
                                                               contracts: Path) -> None:
    with ForgeEmulator("github", tmp_path) as emu:
        emu.add_user("maintainer")
        bot = emu.add_user("bot")
        emu.create_repo("maintainer/app")
        emu.grant("maintainer/app", "bot", "write")
        emu.add_webhook("maintainer/app", None, "s3cret")  # record only
        number = emu.open_issue("maintainer/app", "t", "body", as_user="maintainer")
        emu.label("maintainer/app", number, "orchestrator", as_user="maintainer")
        emu.unlabel("maintainer/app", number, "orchestrator", as_user="maintainer")
        emu.comment("maintainer/app", number, "/kill", as_user="maintainer")
        emu.close("maintainer/app", number, as_user="maintainer")
        emu.reopen("maintainer/app", number, as_user="maintainer")
        emu.push_branch("maintainer/app", "feature", {"a": "1"}, as_user="bot")
        forge = GitHubForge(bot.token, base_url=emu.base_url, retry=RetryPolicy.off(),
                            throttle=False)
        pr = forge.find_or_create_pull("maintainer/app", "feature", "main", "t", "b")
        emu.push_branch("maintainer/app", "feature", {"a": "2"}, as_user="bot")
        emu.set_status("maintainer/app", pr.head_sha, "success", "ci")
        emu.add_check_run("maintainer/app", pr.head_sha, "tests", conclusion="success")
        deliveries = list(emu.deliveries)
    contract = webhook_contract(contracts)
    # The subset has no ``push``: test_push_deliveries_have_the_documented_fields checks it.
    seen = {contract.validate(d.event, d.json()) for d in deliveries if d.event != "push"}
    assert seen >= {"issues-opened", "issues-labeled", "issues-unlabeled",
                    "issue-comment-created", "issues-closed", "issues-reopened",
                    "pull-request-opened", "pull-request-synchronize", "status",
                    "check-run-completed"}


# What docs.github.com ("Webhook events and payloads", push) lists as required, and Forgejo's
# PushPayload (modules/structs/hook.go): neither is in ../shared/contracts/.
GITHUB_PUSH = {"after", "base_ref", "before", "commits", "compare", "created", "deleted",
               "forced", "head_commit", "pusher", "ref", "repository", "sender"}
FORGEJO_PUSH = {"ref", "before", "after", "compare_url", "commits", "total_commits",
                "head_commit", "repository", "pusher", "sender"}


@pytest.mark.parametrize("flavour", ["github", "forgejo"])
def test_push_deliveries_have_the_documented_fields(tmp_path: Path, contracts: Path,
                                                    flavour: str) -> None:
    with ForgeEmulator(flavour, tmp_path) as emu:  # type: ignore[arg-type]
        emu.add_user("maintainer")
        emu.create_repo("maintainer/app", files={"a.py": "a = 1\n"})
        emu.add_webhook("maintainer/app", None, "s3cret")  # record only
        emu.commit_to_base("maintainer/app", "a.py", "a = 2\n", "Change a")
        emu.push_branch("maintainer/app", "feature", {"b.py": "b = 1\n"}, as_user="maintainer")
        pushes = [d.json() for d in emu.deliveries if d.event == "push"]
    assert [p["ref"] for p in pushes] == ["refs/heads/main", "refs/heads/feature"]
    for payload in pushes:
        assert set(payload) == (GITHUB_PUSH if flavour == "github" else FORGEJO_PUSH)
        assert payload["head_commit"]["id"] == payload["after"]
    if flavour == "forgejo":  # each commit is swagger.v1.json's PayloadCommit, closed world
        spec = json.loads((contracts / "forgejo" / "swagger.v1.json").read_text())
        closed = close_world(spec["definitions"])
        registry = Registry().with_resource("urn:f", Resource.from_contents(
            {"definitions": closed}, default_specification=DRAFT4))
        validator = jsonschema.Draft4Validator({"$ref": "urn:f#/definitions/PayloadCommit"},
                                               registry=registry)
        for payload in pushes:
            for commit in [*payload["commits"], payload["head_commit"]]:
                assert not list(validator.iter_errors(commit)), commit
