"""The forge emulator's pages for people, over HTTP, in both flavours: what a visitor reads
(issues, an issue's thread with its status comment as Markdown, a PR's diff with review line
comments beside their lines, statuses linking to the CI log) and what the buttons do (they act
through the emulator's API, so the runner's webhook receives what a person's click makes)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from runner.testing.forge import ForgeEmulator
from runner.testing.forge_pages import parse_diff

REPO = "acme/app"
FILES = {"README.md": "# app\n", "src/app/calc.py": "def add(a, b):\n    return a - b\n"}


@pytest.fixture(params=["github", "forgejo"])
def forge(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    with ForgeEmulator(request.param, tmp_path) as emulator:
        emulator.add_user("alice")
        emulator.add_user("bot")
        emulator.create_repo(REPO, files=FILES)
        emulator.grant(REPO, "alice", "write")
        emulator.grant(REPO, "bot", "write")
        emulator.state.ensure_label(emulator.repo(REPO), "orchestrator")
        emulator.serve_pages("alice", dashboard_url="http://dash.example")
        yield emulator


def test_create_repo_seeds_files_in_sub_folders(forge: ForgeEmulator, tmp_path: Path) -> None:
    from runner.testing import forge_git

    listing = forge_git.git("ls-tree", "-r", "--name-only", "main",
                            cwd=forge.repo(REPO).git_dir)
    assert "src/app/calc.py" in listing.split()


def test_open_an_issue_and_label_it_from_the_pages(forge: ForgeEmulator) -> None:
    received: list[str] = []
    forge.observers.append(lambda ex: received.append(f"{ex.method} {ex.path}"))
    with httpx.Client(base_url=forge.url, follow_redirects=True) as web:
        page = web.get(f"/{REPO}/issues")
        assert page.status_code == 200 and "signed in as" in page.text
        made = web.post(f"/{REPO}/issues/new",
                        data={"title": "<script>alert(1)</script> broken",
                              "body": "Fix **add**. <img src=x onerror=alert(1)>"})
        assert made.status_code == 200
        number = int(re.search(r"/issues/(\d+)$", str(made.url)).group(1))  # type: ignore[union-attr]
        # hostile text is shown as text: no tag from the issue reaches the page
        assert "<script>alert(1)</script>" not in made.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt; broken" in made.text
        assert "<img" not in made.text and "<strong>add</strong>" in made.text
        web.post(f"/{REPO}/issues/{number}/label", data={"name": "orchestrator"})
        web.post(f"/{REPO}/issues/{number}/comment", data={"body": "/kill too slow"})
    issue = forge.issue(REPO, number)
    assert [x.name for x in issue.labels] == ["orchestrator"]
    assert [(c.user.login, c.body) for c in issue.comments] == [("alice", "/kill too slow")]
    assert issue.events[0].actor.login == "alice"
    # through the REST API, as any client
    assert any(r.startswith("POST /repos/acme/app/issues/") and r.endswith("/labels")
               for r in received)


def test_status_comment_is_markdown_and_links_to_its_run(forge: ForgeEmulator) -> None:
    number = forge.open_issue(REPO, "t", "b", as_user="alice")
    forge.comment(REPO, number, "### orchestrator run `r-0123456789ab`: **running**\n\n"
                  "- [x] Acknowledged\n\n<!-- orchestrator:status -->\n<b>raw</b>",
                  as_user="bot")
    page = httpx.get(f"{forge.url}/{REPO}/issues/{number}").text
    assert "<h3>orchestrator run <code>r-0123456789ab</code>" in page
    assert "&lt;b&gt;raw&lt;/b&gt;" in page and "<b>raw</b>" not in page
    assert 'href="/_emulator/dashboard/runs/r-0123456789ab"' in page
    # the link opens the run's page on the dashboard (pages without a sign-in: directly)
    opened = httpx.get(f"{forge.url}/_emulator/dashboard/runs/r-0123456789ab")
    assert opened.status_code == 303
    assert opened.headers["location"] == "http://dash.example/runs/r-0123456789ab"
    elsewhere = httpx.get(f"{forge.url}/_emulator/dashboard/..%2F..%2Fevil.example")
    assert elsewhere.headers["location"] == "http://dash.example/runs"


def test_pull_request_page_shows_diff_statuses_and_line_comments(forge: ForgeEmulator) -> None:
    forge.configure_ci(REPO, "true", context="ci/tests")
    sha = forge.push_branch(REPO, "fix", {"src/app/calc.py": "def add(a, b):\n"
                                          "    return a + b\n"}, as_user="bot")
    token = forge.state.user("bot").token
    api = httpx.Client(base_url=forge.api_url, headers={"Authorization": f"token {token}"})
    pull = api.post(f"/repos/{REPO}/pulls", json={"title": "Fix add", "head": "fix",
                                                  "base": "main", "body": "Fixes #1"}).json()
    forge.wait_idle()
    with httpx.Client(base_url=forge.url, follow_redirects=True) as web:
        review = web.post(f"/{REPO}/issues/{pull['number']}/review",
                          data={"body": "Looks right", "event": "comment",
                                "path": "src/app/calc.py", "line": "2",
                                "comment": "good: <em>sum</em>"})
        assert review.status_code == 200, review.text
        first = forge.issue(REPO, pull["number"]).pull.line_comments[0]  # type: ignore[union-attr]
        forge.reply(REPO, pull["number"], first.id, "bot", "Addressed in 0123abcd")
        page = web.get(str(pull["html_url"]).removeprefix(forge.url)).text
    assert "return a + b" in page and "return a - b" in page
    assert re.search(r'id="L-src/app/calc.py-2".*?</tr>\s*<tr class="line-comment"', page,
                     re.S), "the line comment is right under its diff line"
    assert "good: &lt;em&gt;sum&lt;/em&gt;" in page
    # the reply sits in the same conversation, after the comment it answers
    assert re.search(r'<tr class="line-comment"[^>]*>.*?good: &lt;em&gt;.*?class="thread-comment '
                     r'reply".*?Addressed in 0123abcd.*?</tr>', page, re.S)
    assert "ci/tests" in page and "ci-success" in page
    log_link = re.search(r'href="(/_emulator/ci/\d+)" class="ci-link"', page)
    assert log_link is not None
    log = httpx.get(forge.url + log_link.group(1))
    assert log.status_code == 200 and sha in log.text
    stored = forge.issue(REPO, pull["number"]).pull.reviews[0]  # type: ignore[union-attr]
    assert stored.user.login == "alice" and stored.comments[0]["path"] == "src/app/calc.py"


def test_a_cross_site_form_is_refused(forge: ForgeEmulator) -> None:
    number = forge.open_issue(REPO, "t", "b", as_user="alice")
    answer = httpx.post(f"{forge.url}/{REPO}/issues/{number}/comment", data={"body": "x"},
                        headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403
    assert forge.issue(REPO, number).comments == []


def test_parse_diff_numbers_new_lines() -> None:
    files = parse_diff("diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n"
                       " a\n-b\n+c\n")
    assert [(ln.kind, ln.new) for ln in files[0].lines] == [
        ("hunk", None), ("ctx", 1), ("del", None), ("add", 2)]


def test_the_merge_button_merges_through_the_api(forge: ForgeEmulator) -> None:
    forge.push_branch(REPO, "fix", {"src/app/calc.py": "def add(a, b):\n    return a + b\n"},
                      as_user="bot")
    number = _open_pull(forge)
    received: list[str] = []
    forge.observers.append(lambda ex: received.append(f"{ex.method} {ex.path}"))
    path = "pull" if forge.flavour == "github" else "pulls"
    with httpx.Client(base_url=forge.url, follow_redirects=True) as web:
        assert 'id="merge"' in web.get(f"/{REPO}/{path}/{number}").text
        page = web.post(f"/{REPO}/{path}/{number}/merge", headers={"Origin": forge.url})
    assert page.status_code == 200
    assert 'id="pull-state">merged<' in page.text and "Merged by <b>alice</b>" in page.text
    pull = forge.issue(REPO, number).pull
    assert pull is not None and pull.merged and pull.merged_by.login == "alice"  # type: ignore[union-attr]
    method = "PUT" if forge.flavour == "github" else "POST"
    assert f"{method} /repos/{REPO}/pulls/{number}/merge" in received


def _open_pull(forge: ForgeEmulator) -> int:
    token = forge.state.user("bot").token
    with httpx.Client(base_url=forge.api_url, headers={"Authorization": f"token {token}"}) as api:
        made = api.post(f"/repos/{REPO}/pulls", json={"title": "Fix add", "head": "fix",
                                                      "base": "main", "body": "Fixes #1"})
    return int(made.json()["number"])
