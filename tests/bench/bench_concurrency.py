"""scripts/bench concurrency [N]: N issues labelled at once (default 20) against the emulators
with real Docker; first one `serve` process on SQLite, then two `serve` processes sharing one
Redis. Figures per phase: runs completed, dispatch latency under load (label -> the agent's
first tool call, p50/p95), the runner processes' peak resident memory (total and per run) and
their CPU seconds per run.

The runner runs as real `orchestrator serve` processes so that its memory and CPU are read
from /proc for those processes alone (the emulators and the benchmark itself are not counted;
git commands the runner waited for are, as its children's CPU).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker

from runner.model import RunState
from runner.sandbox.docker import WARM_PREFIX
from runner.testing.demo import MAINTAINER, REPO, DemoWorld
from tests.bench.common import median, percentile, report
from tests.support import Serve as ServeProcess
from tests.support import free_port, wait_for_port

TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {"completed_all": True, "dispatch_p95_s": 3.0, "runner_rss_mb": 300.0}


class Serve(ServeProcess):
    """One `orchestrator serve` process, whose memory and CPU the benchmark reads."""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mb(self) -> float:
        """Resident memory now, in MiB (0 once the process has gone)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def cpu_s(self) -> tuple[float, float]:
        """(own user+system CPU seconds, of waited-for children such as git)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        return (utime + stime) / TICKS, (cutime + cstime) / TICKS


class PeakMemory:
    """Samples the summed RSS of the runner processes every 0.2 s; keeps the peak."""

    def __init__(self, processes: list[Serve]) -> None:
        self.processes, self.peak = processes, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, sum(p.rss_mb() for p in self.processes))


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A redis-server (or valkey-server) on a free loopback port, for the second phase."""
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=60)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


# Milestones between the label and the first tool call, from the run's audit events: where
# dispatch time goes under load.
MILESTONES = (("created", lambda e: e.kind == "created"),
              ("claimed", lambda e: e.kind == "transition" and e.data.get("to") == "preparing"),
              ("worktree", lambda e: e.kind == "workspace"),
              ("container", lambda e: e.kind == "sandbox"),
              ("first_tool_call", lambda e: e.kind == "agent.turn"))


def milestones(world: DemoWorld, run_id: str) -> dict[str, float]:
    """When each milestone was first reached (epoch seconds)."""
    found: dict[str, float] = {}
    for event in world.store.events(run_id, limit=1000):
        for name, matches in MILESTONES:
            if name not in found and matches(event):
                found[name] = float(event.at)
    return found


def phase(n: int, workdir: Path, *, redis_url: str | None, processes: int) -> dict[str, Any]:
    """Label ``n`` issues at once against ``processes`` serve processes; the figures."""
    slots = -(-n // processes)  # enough slots between them for every run to start at once
    store = {"redis": redis_url} if redis_url else {"sqlite": str(workdir / "state.db")}
    with DemoWorld(workdir, start_runner=False,
                   settings={"store": store, "limits": {"max_concurrent": slots,
                                                        "per_repo": n}}) as world:
        config = world.write_config(workdir / "orchestrator.yml")
        ports = [free_port() for _ in range(processes)]
        # Webhooks reach the first process; the others learn of work through the store.
        world.forge.add_webhook(REPO, f"http://127.0.0.1:{ports[0]}/webhooks/github",
                                world.secret)
        serves = [Serve(config, port, workdir / f"serve-{i}.log").start()
                  for i, port in enumerate(ports)]
        try:
            warm = world.open_issue(title="warm-up")  # the mirror clone, image in cache
            world.wait_finished(warm, timeout=300)
            # Each process keeps a warm sandbox per worker slot: the label burst comes once
            # they are all up, as it would on a runner that has been serving for a while.
            warm_mb = wait_warm(serves, slots * processes)
            cpu_before = [s.cpu_s() for s in serves]
            issues = [world.forge.open_issue(REPO, f"add() is wrong ({i})",
                                             "`add(2, 3)` returns -1; it should return 5.",
                                             as_user=MAINTAINER) for i in range(n)]
            labelled: dict[int, float] = {}
            with PeakMemory(serves) as memory:
                started = time.monotonic()
                for issue in issues:  # as fast as the forge takes them: "at once"
                    labelled[issue] = time.time()
                    world.forge.label(REPO, issue, "orchestrator", as_user=MAINTAINER)
                finished = [world.wait_finished(issue, timeout=900) for issue in issues]
                wall = time.monotonic() - started
            cpu_after = [s.cpu_s() for s in serves]
        finally:
            for serve in serves:
                serve.stop()
    completed = sum(1 for run in finished if run.state is RunState.SUCCEEDED)
    marks = {run.issue: milestones(world, run.id) for run in finished}
    dispatch = [m["first_tool_call"] - labelled[i] for i, m in marks.items()
                if "first_tool_call" in m]
    stages: dict[str, float] = {}
    previous = None
    for name, _ in MILESTONES:  # p50 of each step's share, label -> created -> ... -> tool
        spans = [m[name] - (m[previous] if previous else labelled[i])
                 for i, m in marks.items() if name in m and (previous is None or previous in m)]
        if spans:
            stages[f"stage_{name}_p50_s"] = round(median(spans), 3)
        previous = name
    # The slowest run's steps: where the tail goes, which the medians above do not show.
    slowest_issue = max((i for i, m in marks.items() if "first_tool_call" in m),
                        key=lambda i: marks[i]["first_tool_call"] - labelled[i])
    slow, previous = {}, None
    for name, _ in MILESTONES:
        mark = marks[slowest_issue]
        if name in mark:
            slow[name] = round(mark[name] - (mark[previous] if previous else
                                             labelled[slowest_issue]), 3)
            previous = name
    own = sum(a[0] - b[0] for a, b in zip(cpu_after, cpu_before, strict=True))
    children = sum(a[1] - b[1] for a, b in zip(cpu_after, cpu_before, strict=True))
    failed = [f"#{r.issue} {r.state}: {r.reason}" for r in finished
              if r.state is not RunState.SUCCEEDED]
    for line in failed:
        print("  not completed:", line, file=sys.stderr)
    return {"completed": completed, "dispatch_p50_s": median(dispatch),
            "dispatch_p95_s": percentile(dispatch, 95), "dispatch_max_s": max(dispatch),
            "runner_rss_mb": round(memory.peak, 1), "runner_rss_mb_per_run":
            round(memory.peak / n, 2), "runner_cpu_s_per_run": round((own + children) / n, 3),
            "runner_cpu_own_s_per_run": round(own / n, 3), "wall_s": round(wall, 1),
            "warm_sandboxes_mb": round(warm_mb, 1),
            "processes": processes, "slots_per_process": slots, **stages,
            "slowest_stages_s": slow}


def wait_warm(serves: list[Serve], want: int, timeout: float = 300.0) -> float:
    """Wait until the serve processes keep ``want`` warm sandboxes; their memory in MiB
    (outside the runner processes, so reported on its own)."""
    client = docker.from_env()
    pids = {str(s.pid) for s in serves}
    deadline = time.monotonic() + timeout
    while True:
        warm = [c for c in client.api.containers(filters={"label": "orchestrator.warm"})
                if c["Labels"]["orchestrator.warm"].split(":")[1] in pids
                and c["Names"][0].lstrip("/").startswith(WARM_PREFIX)]
        if len(warm) >= want:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(warm)} of {want} warm sandboxes after {timeout:.0f}s")
        time.sleep(0.5)
    total = 0.0
    for container in warm:
        stats = client.api.stats(container["Id"], stream=False)
        total += stats.get("memory_stats", {}).get("usage", 0) / 1024**2
    return total


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 20
    only = argv[1] if len(argv) > 1 else ""  # "sqlite" or "redis": one phase (for profiling)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        root = Path(tmp)
        (root / "sqlite").mkdir()
        print(f"phase 1: {n} issues, one serve process, SQLite", file=sys.stderr)
        sqlite = phase(n, root / "sqlite", redis_url=None, processes=1) \
            if only != "redis" else {}
        (root / "redis").mkdir()
        (root / "redis-data").mkdir()
        print(f"phase 2: {n} issues, two serve processes, Redis", file=sys.stderr)
        redis: dict[str, Any] = {}
        if only != "sqlite":
            with redis_server(root / "redis-data") as url:
                redis = phase(n, root / "redis", redis_url=url, processes=2)
    figures: dict[str, Any] = {**sqlite}  # the headline figures: the default deployment
    figures.update({f"redis_{key}": value for key, value in redis.items()})
    figures["meets_targets"] = all(
        p["completed"] == n and p["dispatch_p95_s"] <= TARGETS["dispatch_p95_s"]
        and p["runner_rss_mb"] <= TARGETS["runner_rss_mb"] for p in (sqlite, redis) if p)
    figures["targets"] = TARGETS
    figures["load_average_before"] = load_before
    figures["load_average_after"] = load_average()
    report("concurrency", n, figures,
           title=f"{n} issues labelled at once (SQLite, then Redis with two serve processes)")
    return 0 if figures["meets_targets"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
