"""Observability: metrics hooks on the pipeline, the Prometheus export, structured logs."""
