"""The submitter's Python client (docs/client.md): submit, list, follow, kill and
retry jobs and tasks over AMQP, with no database credentials and no SQL code."""

from broker.client.client import Client

__all__ = ["Client"]
