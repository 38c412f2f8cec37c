"""Processes: the Temporal worker, Ray model serving and the tool executors."""
