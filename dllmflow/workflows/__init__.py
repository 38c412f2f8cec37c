"""Temporal workflow and activity definitions (no I/O in workflow code)."""
