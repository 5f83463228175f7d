"""scripts/bench kill [N]: /kill comment webhook -> container gone and run cancelled, in every
state of a run (queued, preparing with a slow fetch, running, pushing with a slow push, gating,
reviewing with a slow reviewer), N samples a state (default 3), with the emulators, real Docker
and SQLite. Figures over all samples, and ``by_state``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import docker

from tests.bench.common import report, spread
from tests.e2e.kill_scenarios import STATES, Writes, hold_and_kill, scenario


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 3
    client = docker.from_env()
    by_state: dict[str, list[float]] = {}
    writes_after: dict[str, list[str]] = {}
    for state in STATES:
        held = scenario(state)
        with tempfile.TemporaryDirectory(prefix="bench-kill-") as tmp, \
                held.world(Path(tmp)) as world:
            held.arrange(world)
            for i in range(n):
                writes = Writes()
                world.forge.observers.append(writes.observe)
                _, seconds = hold_and_kill(world, held, client, writes, title=f"kill me {i}")
                world.forge.observers.remove(writes.observe)
                by_state.setdefault(str(state), []).append(seconds)
                writes_after.setdefault(str(state), []).extend(writes.not_the_kills_own())
                print(f"  {state} {i + 1}/{n}: {seconds:.3f}s", file=sys.stderr)
    samples = [s for values in by_state.values() for s in values]
    figures = {**spread(samples), "target_max_s": 2.0,
               "by_state": {state: {key: round(value, 3) for key, value in spread(v).items()}
                            for state, v in by_state.items()},
               "forge_writes_after_kill": sum(len(v) for v in writes_after.values())}
    report("kill", len(samples), figures,
           title=f"/kill webhook -> container gone and run cancelled, every state (n={n} each)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
