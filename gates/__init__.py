"""The mechanical gates, runnable anywhere: ``python -m gates --profile standard``."""
