"""What every benchmark shares: percentiles, the machine, the JSON file and the table."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(os.environ.get("BENCH_RESULTS", "bench-results"))


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def spread(samples: list[float]) -> dict[str, float]:
    """p50, p95, min and max of ``samples`` (seconds), as the benchmarks report them."""
    return {"p50_s": median(samples), "p95_s": percentile(samples, 95), "min_s": min(samples),
            "max_s": max(samples)}


def machine() -> dict[str, Any]:
    memory = 0
    try:
        with open("/proc/meminfo") as f:
            memory = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory_gb": round(memory / 1024**3, 1)}


def report(name: str, n: int, figures: dict[str, Any], *, title: str = "") -> Path:
    """Print the figures as a table and write ``bench-results/NAME.json``."""
    data = {"name": name, "n": n, "machine": machine(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    table = Table(title=title or f"bench {name} (n={n})", header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)
    print(f"wrote {path}")
    return path
