"""Emulators of the external services (forges, the Messages API) that speak their wire protocols over loopback."""
