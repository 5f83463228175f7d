"""Sandboxes: where the agent's commands run (base.py), Docker and local backends."""
