from __future__ import annotations

from pathlib import Path

import pytest

from runner.workspace import Workspaces
from tests.integration.workspace.gitrepo import Upstream


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path)


@pytest.fixture
def workspaces(tmp_path: Path) -> Workspaces:
    return Workspaces(tmp_path / "data")
