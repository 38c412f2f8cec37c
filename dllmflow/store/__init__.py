"""Postgres models and repositories, Redis streams and dead letters."""
