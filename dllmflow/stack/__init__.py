"""The embedded stack: real PostgreSQL, Redis, Temporal and Ray servers run under the state dir."""
