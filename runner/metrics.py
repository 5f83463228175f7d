"""Prometheus metrics of one runner process, in the text exposition format (version 0.0.4).

Most figures are derived from the audit events every process sees on the store's bus, so
the run steps and the controller need no metric calls of their own:

- dispatch latency: webhook accepted (or the run created, when no webhook of this process
  preceded it) -> the run's first agent action (a model turn asking for a tool, a tool call
  or command output);
- kill latency: ``kill_requested`` -> the run's transition to ``cancelled``;
- agent tokens and cost from ``agent.turn`` events, gate outcomes from ``gates``, ``ci`` and
  ``review`` events.

The server reports webhook deliveries itself (``webhook_delivery``, ``webhook_accepted``);
runs by state are counted by the store itself at scrape time (``Store.count_by_state``, an
index: no scrape reads every run). The metrics are ``prometheus_client``'s, in a registry of
this object's own. Every process sharing a Redis store
sees the whole fleet's bus, so scrape one process (or aggregate with ``max``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from runner.model import RunState
from runner.store.base import BusMessage, Store, StoreError

log = logging.getLogger("orchestrator.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# Agent actions that count as "the agent is working" for the dispatch latency.
AGENT_ACTIONS = frozenset({"agent.tool", "agent.output"})
# A webhook older than this before a run's creation did not cause it.
WEBHOOK_WINDOW_S = 600.0
MAX_TRACKED_RUNS = 10000
# No ``*_created`` series: a scrape shows the figures the docs name, nothing else.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in the library


class _StoreCounts(Collector):
    """Runs by state, and whether the store answered, read from the store at each scrape."""

    def __init__(self) -> None:
        self.store: Store | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runs = GaugeMetricFamily("orchestrator_runs", "Runs in the store by state.",
                                 labels=["state"])
        counts = {state: 0 for state in RunState}
        up = 0
        if self.store is not None:
            try:
                counts = self.store.count_by_state()
                up = 1
            except StoreError as exc:
                log.warning("metrics: cannot count runs: %s", exc)
        for state in RunState:
            runs.add_metric([state.value], counts.get(state, 0))
        yield runs
        yield GaugeMetricFamily("orchestrator_store_up",
                                "1 when the store answered this scrape.", value=up)


@dataclass
class _RunTrack:
    repo: str
    issue: int
    created_at: float
    dispatched: bool = False
    kill_at: float | None = None


class Metrics:
    """The process's metrics: fed by the server and by the store's bus, rendered on scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        self._store_counts = _StoreCounts()
        self.registry.register(self._store_counts)
        reg = self.registry
        self.dispatch = Histogram("orchestrator_dispatch_latency_seconds",
                                  "Webhook accepted (or run created) to the agent's first action.",
                                  buckets=LATENCY_BUCKETS, registry=reg)
        self.kill = Histogram("orchestrator_kill_latency_seconds",
                              "Kill requested to the run cancelled.", buckets=LATENCY_BUCKETS,
                              registry=reg)
        self.webhooks = Counter("orchestrator_webhook_deliveries_total",
                                "Webhook deliveries by forge and result.",
                                ["forge", "result"], registry=reg)
        self.gates = Counter("orchestrator_gate_results_total",
                             "Gate outcomes by stage (pre-push, ci, review), gate and outcome.",
                             ["stage", "gate", "outcome"], registry=reg)
        self.tokens = Counter("orchestrator_tokens_total",
                              "Model tokens used by agents and reviewers, by kind.", ["kind"],
                              registry=reg)
        self.cost = Counter("orchestrator_cost_usd_total", "Model cost in US dollars.",
                            registry=reg)
        self.finished = Counter("orchestrator_runs_finished_total",
                                "Runs that reached a terminal state, by state.", ["state"],
                                registry=reg)
        self._webhook_at: dict[tuple[str, int], float] = {}
        self._runs: dict[str, _RunTrack] = {}
        self._follower: _BusFollower | None = None

    # ------------------------------------------------------------ hooks for the server

    def webhook_delivery(self, forge: str, result: str) -> None:
        """Count one webhook delivery; ``result`` is accepted, ignored, duplicate, ..."""
        with self._lock:
            self.webhooks.labels(forge=forge, result=result).inc()

    def webhook_accepted(self, repo: str, issue: int, at: float | None = None) -> None:
        """Remember when a webhook put an issue on the queue (the dispatch latency's start)."""
        with self._lock:
            if len(self._webhook_at) > MAX_TRACKED_RUNS:
                self._webhook_at.clear()
            self._webhook_at[(repo, issue)] = time.time() if at is None else at

    # ------------------------------------------------------------ the bus

    def observe(self, message: BusMessage) -> None:
        """Account for one bus message (only ``{"kind": "event"}`` ones matter)."""
        if message.get("kind") != "event" or not isinstance(message.get("event"), dict):
            return
        event = message["event"]
        run_id, kind = str(event.get("run_id", "")), str(event.get("kind", ""))
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        try:
            at = float(event.get("at", time.time()))
        except (TypeError, ValueError):
            at = time.time()
        with self._lock:
            self._observe(run_id, kind, data, at)

    def _observe(self, run_id: str, kind: str, data: dict[str, Any], at: float) -> None:
        track = self._runs.get(run_id)
        if kind == "created":
            if len(self._runs) > MAX_TRACKED_RUNS:
                self._runs.clear()
            with contextlib.suppress(TypeError, ValueError):
                self._runs[run_id] = _RunTrack(str(data.get("repo", "")),
                                               int(data.get("issue", 0)), at)
        elif kind in AGENT_ACTIONS or (kind == "agent.turn" and data.get("tools")):
            if track is not None and not track.dispatched:
                track.dispatched = True
                start = self._webhook_at.get((track.repo, track.issue))
                if start is None or not 0 <= track.created_at - start <= WEBHOOK_WINDOW_S:
                    start = track.created_at
                self.dispatch.observe(max(0.0, at - start))
        elif kind == "kill_requested":
            if track is not None and track.kill_at is None:
                track.kill_at = at
        elif kind == "transition":
            self._transition(run_id, track, data, at)
        self._usage(kind, data)
        self._gates(kind, data)

    def _transition(self, run_id: str, track: _RunTrack | None, data: dict[str, Any],
                    at: float) -> None:
        target = str(data.get("to", ""))
        if target not in {s.value for s in RunState if s.terminal}:
            return
        self.finished.labels(state=target).inc()
        if track is not None and target == RunState.CANCELLED and track.kill_at is not None:
            self.kill.observe(max(0.0, at - track.kill_at))
        self._runs.pop(run_id, None)

    def _usage(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "agent.turn":
            pairs = {"input": data.get("tokens_in"), "output": data.get("tokens_out"),
                     "cache_read": data.get("cache_read"), "cache_write": data.get("cache_write")}
            cost = data.get("cost_usd")
        elif kind == "review" and isinstance(data.get("usage"), dict):
            usage = data["usage"]
            pairs = {"input": usage.get("input_tokens"), "output": usage.get("output_tokens")}
            cost = usage.get("cost_usd")
        else:
            return
        for name, value in pairs.items():
            if isinstance(value, int | float) and value > 0:
                self.tokens.labels(kind=name).inc(float(value))
        if isinstance(cost, int | float) and cost > 0:
            self.cost.inc(float(cost))

    def _gates(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "gates":
            stage = str(data.get("stage", "pre-push"))
            if data.get("skipped"):
                self.gates.labels(stage=stage, gate="all", outcome="skipped").inc()
            for result in data.get("results") or []:
                if isinstance(result, dict):
                    self.gates.labels(stage=stage, gate=str(result.get("gate", "?")),
                                      outcome="passed" if result.get("passed") else "failed"
                                      ).inc()
        elif kind == "ci":
            self.gates.labels(stage="ci", gate="ci",
                              outcome=str(data.get("state", "unknown"))).inc()
        elif kind == "review":
            self.gates.labels(stage="review", gate="ai-review",
                              outcome=str(data.get("verdict", "unknown"))).inc()

    def follow(self, store: Store) -> None:
        """Start feeding this object from ``store``'s bus in a daemon thread."""
        if self._follower is None:
            self._follower = _BusFollower(self, store)
            self._follower.start()

    def stop(self) -> None:
        """Stop following the bus (waits briefly for the thread)."""
        if self._follower is not None:
            self._follower.stop()
            self._follower = None

    # ------------------------------------------------------------ scrape

    def render(self, store: Store) -> str:
        """The exposition text: these metrics plus runs by state counted by ``store``."""
        with self._lock:
            self._store_counts.store = store
            return generate_latest(self.registry).decode()


class _BusFollower:
    """A daemon thread passing every bus message to ``Metrics.observe``."""

    def __init__(self, metrics: Metrics, store: Store) -> None:
        self.metrics, self.store = metrics, store
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="orchestrator-metrics",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(3)

    def _loop(self) -> None:
        subscription = None
        while not self.stopping.is_set():
            try:
                if subscription is None:
                    subscription = self.store.subscribe()
                message = subscription.get(0.5)
                if message is not None:
                    self.metrics.observe(message)
            except StoreError as exc:
                log.warning("metrics: the store's bus failed (%s); retrying", exc)
                subscription = None
                self.stopping.wait(1.0)
            except Exception:  # a malformed message must not end the metrics
                log.exception("metrics: cannot account for a bus message")
        if subscription is not None:
            with contextlib.suppress(StoreError):
                subscription.close()
