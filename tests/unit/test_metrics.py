"""The metrics page counts runs by state with the store's own query, not by reading runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.metrics import Metrics
from runner.model import RunState
from runner.store.sqlite import SqliteStore


class NoScanStore(SqliteStore):
    """A real SQLite store whose run listing fails: a scrape must not need it."""

    def list_runs(self, **kwargs: Any) -> Any:
        raise AssertionError("a scrape read every run")


def test_a_scrape_counts_runs_by_state_without_listing_them(tmp_path: Path) -> None:
    store = NoScanStore(tmp_path / "state.db")
    first, _ = store.create_run("acme/w", 1)
    store.create_run("acme/w", 2)
    store.transition(first.id, RunState.QUEUED, RunState.CANCELLED, actor="test")
    metrics = Metrics()
    metrics.webhook_delivery("github", "accepted")
    text = metrics.render(store)
    assert 'orchestrator_runs{state="queued"} 1.0' in text
    assert 'orchestrator_runs{state="cancelled"} 1.0' in text
    assert 'orchestrator_runs{state="running"} 0.0' in text
    assert "orchestrator_store_up 1.0" in text
    assert 'orchestrator_webhook_deliveries_total{forge="github",result="accepted"} 1.0' in text
    store.close()
    # Two Metrics objects keep their own figures (each has its own registry).
    assert "result=" not in Metrics().render(store).split("webhook_deliveries_total counter")[1] \
        .split("# HELP")[0]
