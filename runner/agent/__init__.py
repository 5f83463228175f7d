"""Agents: the Agent protocol (base.py), the built-in Claude loop, command-line agents."""
