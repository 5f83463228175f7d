"""The playground in real headless Chromium, as a visitor uses it: open an issue on the forge
pages and label it, watch the run go green on the dashboard, read the pull request (CI status,
AI review, a line comment beside its diff line), then kill a second issue's run with `/kill`
typed in the comment box. Also: the run page of a three-iteration run fits in 2,000 px before
any expanding, and agent-written HTML on the dashboard is text (no script runs).
Screenshots go to test-artifacts/ (gitignored)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.spend import usd
from runner.testing.demo import REPO, SLOW_TITLE, DemoWorld, fixing_agent
from runner.testing.llm import Reply, Request
from runner.testing.playground import open_playground, playground_world, welcome
from tests.support import ARTIFACTS

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def sign_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#token", token)
    page.click("button[type=submit]")


@pytest.mark.parametrize("flavour", ["github", "forgejo"])
def test_a_visitor_labels_an_issue_reads_the_pr_and_kills_a_run(
        tmp_path: Path, sandbox_image: str, chromium: Any, flavour: str) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    with playground_world(tmp_path, flavour) as world:  # type: ignore[arg-type]
        assert world.server is not None
        open_playground(world)
        forge, dash = world.forge.url, world.server.url
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))

        # the printed dashboard link signs the visitor in, once; the token is not in it
        printed = "\n".join(welcome(world, None))
        found = re.search(r"dashboard:\s+(\S+)", printed)
        assert found is not None and world.env["DEMO_API_TOKEN"] not in found.group(1)
        page.goto(found.group(1))
        expect(page).to_have_url(f"{dash}/runs")
        expect(page.locator("nav")).to_contain_text("Log out")
        stranger = chromium.new_page()
        stranger.goto(found.group(1))
        expect(stranger.locator(".error")).to_contain_text("used already")
        stranger.goto(f"{dash}/runs")
        expect(stranger).to_have_url(re.compile(r"/login\?next="))
        stranger.close()

        # the forge: a new issue, labelled from its page
        page.goto(f"{forge}/{REPO}/issues")
        page.fill("#new-title", "add() returns the wrong result")
        page.fill("#new-body", "`add(2, 3)` returns -1. It should return 5.")
        page.click("#new-issue button[type=submit]")
        expect(page).to_have_url(re.compile(rf"/{REPO}/issues/\d+$"))
        number = int(page.url.rsplit("/", 1)[1])
        page.fill("#label-name", "orchestrator")
        page.click("#add-label")
        expect(page.locator("#labels")).to_contain_text("orchestrator")

        # the dashboard (the forge's link, signed in): the run appears and goes green
        page.click("#dashboard-link")
        expect(page).to_have_url(f"{dash}/runs")
        run = world.wait_for(lambda: world.run_for(number), 30, "the run to be created")
        row = page.locator(f'tr[data-run="{run.id}"]')
        expect(row).to_be_visible(timeout=15_000)
        expect(row.locator("[data-state]")).to_have_text("succeeded", timeout=240_000)
        # today's spend follows the runs' cost live, as the rows do (it stayed $0.00)
        spent = world.run_for(number)
        assert spent is not None and spent.cost_usd > 0
        expect(page.locator("#spend")).to_contain_text(f"(UTC): {usd(spent.cost_usd)}")
        page.screenshot(path=str(ARTIFACTS / f"playground-dashboard-{flavour}.png"), full_page=True)

        # the issue names its run, linked to the dashboard (its status comment is written
        # in the background: wait for its last edit)
        world.wait_for(lambda: any("**succeeded**" in c.body for c in
                                   world.forge.issue(REPO, number).comments), 30,
                       "the status comment to say succeeded")
        page.goto(f"{forge}/{REPO}/issues/{number}")
        expect(page.locator(".status-comment").first).to_contain_text("succeeded")
        page.screenshot(path=str(ARTIFACTS / f"playground-issue-{flavour}.png"), full_page=True)

        # the issue's run link opens the run on the dashboard, signed in; it links to the PR,
        # whose page shows CI, the AI review and its line note
        page.locator("a.run-link", has_text=run.id).first.click()
        expect(page).to_have_url(f"{dash}/runs/{run.id}")
        page.locator(".facts a", has_text="PR #").click()
        expect(page).to_have_url(re.compile(r"/pulls?/\d+$"))
        expect(page.locator("#checks")).to_contain_text("ci/tests")
        expect(page.locator("#checks .ci-success").first).to_be_visible()
        expect(page.locator(".review").first).to_contain_text("AI review")
        note = page.locator("tr.line-comment").first
        expect(note).to_contain_text("negative numbers")
        beside = note.evaluate("row => row.previousElementSibling.dataset.line")
        assert beside == "6", "the line comment sits under the line it is about"
        expect(page.locator('tr[data-line="6"]').first).to_contain_text("return a + b")
        page.screenshot(path=str(ARTIFACTS / f"playground-pr-{flavour}.png"), full_page=True)

        # the CI log, from the status's link
        pr_page = page.url
        page.locator("#checks a.ci-link").first.click()
        expect(page.locator("#ci-log")).to_contain_text("all tests pass")

        # the visitor reviews: changes requested, with a line comment, from the PR's form
        page.goto(pr_page)
        page.fill("#review-body", "One more thing before I merge.")
        page.select_option("#review-path", "calc.py")
        page.fill("#review-line", "6")
        page.fill("#review-comment", "Please add a test with negative numbers.")
        page.check("input[name=event][value=request_changes]")
        page.click("#review-submit")
        expect(page.locator(".review").last).to_contain_text("changes requested")
        # a follow-up starts, shows on the dashboard and goes green
        follow_up = world.wait_for(lambda: (r := world.run_for(number)) is not None
                                   and r.id != run.id and r, 60, "a follow-up of the review")
        assert follow_up.details.follows == run.id
        page.goto(f"{dash}/runs")
        row = page.locator(f'tr[data-run="{follow_up.id}"]')
        expect(row.locator("[data-state]")).to_have_text("succeeded", timeout=240_000)
        # the PR page: the agent's reply in the thread of the visitor's line comment,
        # naming the follow-up's commit (written as the follow-up ends)
        world.wait_for(lambda: any(e.kind == "replied" for e in
                                   world.store.events(follow_up.id, limit=10000)),
                       60, "the follow-up's reply in the review thread")
        answered = world.run_for(number)
        assert answered is not None and answered.head_sha
        page.goto(pr_page)
        thread = page.locator("tr.line-comment", has_text="Please add a test with").filter(
            has=page.locator(".thread-comment.reply"))
        expect(thread.locator(".reply").last).to_contain_text(answered.head_sha[:12])
        expect(thread.locator(".reply").last).to_contain_text("Added a test with negative")
        assert thread.evaluate("row => row.previousElementSibling.dataset.line") == "6"
        expect(page.locator("#files")).to_contain_text("assert add(-2, -3) == -5")
        page.screenshot(path=str(ARTIFACTS / f"playground-pr-answered-{flavour}.png"),
                        full_page=True)

        # the visitor merges the PR from its page; the dashboard shows the run's PR merged
        page.click("#merge")
        expect(page.locator("#pull-state")).to_have_text("merged")
        expect(page.locator("#merge-box")).to_contain_text("Merged by alice")
        page.goto(f"{dash}/runs")
        row = page.locator(f'tr[data-run="{answered.id}"]')
        expect(row).to_contain_text(f"#{answered.pr_number} merged", timeout=30_000)
        page.goto(f"{dash}/runs/{answered.id}")
        expect(page.locator(".facts")).to_contain_text(f"PR #{answered.pr_number} (merged)")
        page.screenshot(path=str(ARTIFACTS / f"playground-merged-run-{flavour}.png"),
                        full_page=True)

        # a second issue, killed with /kill typed in its comment box
        page.goto(f"{forge}/{REPO}/issues")
        page.fill("#new-title", SLOW_TITLE)
        page.click("#new-issue button[type=submit]")
        expect(page).to_have_url(re.compile(rf"/{REPO}/issues/\d+$"))
        second = int(page.url.rsplit("/", 1)[1])
        page.click("#add-label")
        world.wait_for(lambda: (r := world.run_for(second)) is not None and any(
            e.kind == "agent.turn" for e in world.store.events(r.id, limit=1000)),
            120, "the agent working on the second issue")
        page.fill("#comment-body", "/kill this is taking too long")
        page.click("#comment-submit")
        killed = world.wait_state(second, RunState.CANCELLED, timeout=30)
        assert killed.killed_by == "alice"
        page.goto(f"{dash}/runs/{killed.id}")
        expect(page.locator(".facts [data-state]")).to_have_text("cancelled")
        expect(page.locator("#timeline .m-kill")).to_contain_text("kill by alice")
        page.screenshot(path=str(ARTIFACTS / f"playground-killed-run-{flavour}.png"),
                        full_page=True)
        assert problems == []
        page.close()


def three_rounds_reviewer() -> Any:
    """Requests changes twice, then approves: a run of three iterations."""
    calls = [0]
    lock = threading.Lock()

    def policy(request: Request) -> Reply:
        with lock:
            calls[0] += 1
            round_ = calls[0]
        if round_ >= 3:
            return Reply.text(json.dumps({"verdict": "approve", "confidence": 0.95,
                                          "summary": "Good now.", "findings": []}))
        return Reply.text(json.dumps({
            "verdict": "request_changes", "confidence": 0.9,
            "summary": "<script>window.owned = 1</script> Needs a test.",
            "findings": [{"path": "calc.py", "line": 6, "severity": "major",
                          "message": "<img src=x onerror=\"window.owned=2\"> add a test"}]}))

    return policy


def listening_agent() -> Any:
    first = fixing_agent()

    def policy(request: Request) -> Reply:
        if "what failed last time" not in request.first_user_text():
            return first(request)
        if request.turn == 0:
            return Reply.bash("printf 'assert add(-1, 1) == 0\\n' >> test_calc.py",
                              "<script>window.owned = 3</script>Adding a test.")
        return Reply.finish("Added a test for negative numbers")

    return policy


def test_a_three_iteration_run_page_is_short_and_shows_agent_html_as_text(
        tmp_path: Path, sandbox_image: str, chromium: Any) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    with DemoWorld(tmp_path, agent=listening_agent(), reviewer=three_rounds_reviewer()) as world:
        assert world.server is not None
        issue = world.open_issue()
        run = world.wait_finished(issue, timeout=400)
        assert run.state is RunState.SUCCEEDED and run.iteration == 3, run.reason
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        sign_in(page, world.server.url, world.env["DEMO_API_TOKEN"])
        page.goto(f"{world.server.url}/runs/{run.id}")
        expect(page.locator("#timeline .tl-seg").first).to_be_visible()
        assert page.locator("#timeline .tl-seg.s-running").count() == 3
        assert page.locator("#timeline .m-iteration").count() == 2
        assert page.locator("details.iteration").count() == 4
        height = page.evaluate("document.documentElement.scrollHeight")
        page.screenshot(path=str(ARTIFACTS / "run-page-three-iterations.png"), full_page=True)
        assert height <= 2000, f"the run page is {height} px tall before expanding"
        # agent-written HTML is text, and none of it ran
        page.locator("details.iteration > summary").first.click()  # open a folded group
        page.evaluate("document.querySelectorAll('#events details').forEach(d => d.open = true)")
        expect(page.locator("#events")).to_contain_text('<img src=x onerror="window.owned=2">')
        expect(page.locator("#events")).to_contain_text("<script>window.owned = 1</script>")
        expect(page.locator("#events")).to_contain_text("<script>window.owned = 3</script>")
        assert page.evaluate("window.owned") is None
        assert page.locator("#events script, #events img").count() == 0
        page.close()
