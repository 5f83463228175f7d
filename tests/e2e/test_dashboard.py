"""The dashboard in real headless Chromium (Debian's package, driven by playwright-python)
during a demo-like run: log in, watch the run's events arrive live, kill it with a reason,
see it cancelled; then Kill all and Resume. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.testing.demo import DemoWorld, slow_agent
from tests.support import ARTIFACTS, containers_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_log_in_watch_live_and_kill_from_the_dashboard(tmp_path: Path, sandbox_image: str,
                                                        docker_client: Any,
                                                        chromium: Any) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    with DemoWorld(tmp_path, agent=slow_agent(120)) as world:
        assert world.server is not None
        base = world.server.url
        page = chromium.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(30_000)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))

        # signing in: a wrong token is refused, the right one lands on the runs list
        page.goto(f"{base}/runs")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.fill("#token", "not-the-token")
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_contain_text("not the API token")
        page.fill("#token", world.env["DEMO_API_TOKEN"])
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{base}/runs")

        issue = world.open_issue()
        run = world.wait_for(lambda: world.run_for(issue), 30, "the run to be created")
        # the list refreshes itself: the new run shows up without a reload
        row = page.locator(f'tr[data-run="{run.id}"]')
        expect(row).to_be_visible(timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-runs.png"), full_page=True)

        row.locator("a", has_text=run.id).click()
        expect(page).to_have_url(f"{base}/runs/{run.id}")
        page.evaluate("window.__sameDocument = true")
        loaded = page.locator("li.ev").count()

        # the agent's turn and its running command appear on the page as they happen
        expect(page.locator("li.k-agent-turn").first).to_be_visible(timeout=60_000)
        expect(page.locator(".facts [data-state]")).to_have_text("running")
        world.wait_state(issue, RunState.RUNNING)

        # Kill asks for a reason, then kills
        page.click("#kill-button")
        dialog = page.locator("#kill-dialog")
        expect(dialog).to_be_visible()
        dialog.locator("[data-confirm]").click()  # no reason yet: refused in the page
        expect(dialog).to_be_visible()
        dialog.locator("textarea[name=reason]").fill("wrong approach, <b>stop</b>")
        dialog.locator("[data-confirm]").click()
        expect(dialog).to_be_hidden()

        expect(page.locator("li.k-kill_requested")).to_contain_text("wrong approach, <b>stop</b>")
        expect(page.locator(".facts [data-state]")).to_have_text("cancelled", timeout=30_000)
        expect(page.locator("body")).to_have_attribute("data-finished", "cancelled",
                                                       timeout=30_000)
        expect(page.locator("#kill-button")).to_have_count(0)
        # who killed it and why show up live, without a reload
        expect(page.locator("[data-killed-by]")).to_have_text("dashboard:demo_api_token")
        expect(page.locator("[data-reason]")).to_have_text("wrong approach, <b>stop</b>")
        assert page.locator("li.ev").count() > loaded
        assert page.evaluate("window.__sameDocument") is True  # live, not reloaded
        page.screenshot(path=str(ARTIFACTS / "dashboard-run.png"), full_page=True)

        final = world.wait_finished(issue)
        assert final.state is RunState.CANCELLED
        assert final.killed_by == "dashboard:demo_api_token"
        assert final.reason == "wrong approach, <b>stop</b>"
        assert containers_of(docker_client, run.id) == []

        # Kill all pauses dispatch (with a reason); Resume asks for confirmation
        page.goto(f"{base}/runs")
        page.click("[data-open=kill-all-dialog]")
        page.fill("#kill-all-dialog textarea[name=reason]", "incident drill")
        page.click("#kill-all-dialog [data-confirm]")
        expect(page.locator(".banner")).to_contain_text("paused")
        assert world.store.paused()["reason"] == "incident drill"
        page.click("[data-open=resume-dialog]")
        page.click("#resume-dialog [data-confirm]")
        expect(page.locator(".banner")).to_have_count(0)
        assert world.store.paused() is None

        page.goto(f"{base}/health")
        expect(page.locator("table")).to_contain_text("store")
        expect(page.locator("table")).to_contain_text("sandbox (docker)")
        expect(page.locator("dl.facts")).to_contain_text("Queue depth")
        # The forge's request budget, as GitHub's last answer said it (the demo is GitHub).
        expect(page.locator("table")).to_contain_text(re.compile(r"budget [\d,]+ of 5,000"))
        page.screenshot(path=str(ARTIFACTS / "dashboard-health.png"), full_page=True)
        assert problems == []
        page.close()
