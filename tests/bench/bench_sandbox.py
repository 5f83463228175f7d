"""bench sandbox: container start to the first output of an exec, with the sandbox image.

Each sample creates the run's locked-down container (DockerBackend.start, as a run does),
executes ``echo ready`` and stops the clock at its first output chunk; the container is removed
untimed. Usage: ``scripts/bench sandbox [--samples N] [--image IMAGE]``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from runner.sandbox.base import SandboxSpec
from runner.sandbox.docker import DockerBackend
from runner.workspace import Workspaces
from tests.bench.common import median, percentile, report


def small_repo(root: Path) -> str:
    """A bare repository with one commit, to cut the run's worktree from."""
    src = root / "src"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(src)], check=True)
    (src / "README.md").write_text("bench\n")
    ident = ["-c", "user.name=Bench", "-c", "user.email=bench@example.com"]
    subprocess.run(["git", *ident, "-C", str(src), "add", "."], check=True)
    subprocess.run(["git", *ident, "-C", str(src), "commit", "--quiet", "-m", "init"],
                   check=True)
    return str(src)


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench sandbox")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--image", default="orchestrator-sandbox:latest")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        root = Path(tmp)
        spaces = Workspaces(root / "data")
        wt = spaces.prepare("r-bench0", "bench/sandbox", 1, small_repo(root))
        backend = DockerBackend(state_dir=root / "state", image=args.image)
        backend.ping()
        samples: list[float] = []
        for i in range(args.samples):
            run_id = f"r-be{uuid.uuid4().hex[:8]}"
            spec = SandboxSpec(run_id=run_id, repo="bench/sandbox", issue=1,
                               worktree=wt.path, image=args.image)
            first: list[float] = []
            t0 = time.perf_counter()
            sandbox = backend.start(spec)
            try:
                result = sandbox.exec(
                    "echo ready",
                    on_output=lambda _text, seen=first: seen or seen.append(time.perf_counter()))
                if not result.ok or not first:
                    raise SystemExit(f"the sandbox did not answer: {result}")
                samples.append(first[0] - t0)
            finally:
                sandbox.remove()
            print(f"  start {i + 1}/{args.samples}: {samples[-1]:.3f}s")
        spaces.remove(wt)

    report("sandbox", len(samples), {
        "image": args.image,
        "p50_s": round(median(samples), 4),
        "p95_s": round(percentile(samples, 95), 4),
        "min_s": round(min(samples), 4),
        "max_s": round(max(samples), 4),
    }, title="bench sandbox: container start to first exec output")


if __name__ == "__main__":
    main()
