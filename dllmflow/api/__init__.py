"""HTTP API and the operator dashboard."""
