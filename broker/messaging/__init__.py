"""Connections, confirmed publishing and batched consuming over kombu."""
