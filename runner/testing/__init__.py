"""Emulators of the services that cannot run here (forges, the Messages API), speaking
their wire protocols over loopback."""
