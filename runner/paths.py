"""Where the bundled configuration (gates.yml, prompts, templates, sandbox Dockerfile) is:
``config/`` beside the package in a checkout, ``runner/_config/`` inside an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The folder holding gates.yml, prompts/ and templates/."""
    checkout = _PACKAGE.parent / "config"
    return checkout if checkout.is_dir() else _PACKAGE / "_config"


CONFIG_DIR = config_dir()
