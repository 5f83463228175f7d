"""Forges: the Forge protocol (base.py), GitHub and Forgejo adapters, webhook parsing."""
