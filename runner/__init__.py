"""orchestrator: a GitOps agent runner."""

__version__ = "0.1.0"
