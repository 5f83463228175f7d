"""An installed wheel carries the configuration the runner reads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_gates_prompts_and_templates(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(ROOT)], check=True,
                   timeout=300)
    wheel = next(tmp_path.glob("gitops_agent_runner-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("gates.yml", "prompts/agent-system.md", "prompts/reviewer.md",
                   "prompts/continuation.md", "templates/github/orchestrator-gates.yml",
                   "templates/forgejo/orchestrator-dispatch.yml", "sandbox/Dockerfile"):
        assert f"runner/_config/{needed}" in names, needed
    assert "runner/paths.py" in names and "gates/__main__.py" in names
    # the dashboard's and the playground's pages are templates read at run time
    for page in ("runner/templates/run.html", "runner/templates/event.html",
                 "runner/templates/dashboard.css", "runner/testing/templates/forge/pull.html",
                 "runner/testing/templates/forge/forge.css"):
        assert page in names, page
    # The distribution's own name (free on PyPI; forge-orchestrator belongs to another
    # project), with the console script unchanged.
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(info).decode()
    assert "\nName: gitops-agent-runner\n" in metadata
    points = zipfile.ZipFile(wheel).read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "orchestrator = runner.cli:main" in points
