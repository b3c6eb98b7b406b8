"""Batch systems the factory submits pilots to, one module each, imported by name."""

from __future__ import annotations

import importlib

from broker.errors import ConfigError
from broker.factory.submitter import Submitter
from broker.settings import Settings

#: ``factory_batch_system`` value → module in this package (with a ``submitter(settings)``).
BATCH_SYSTEMS = ("local", "slurm")


def open_submitter(settings: Settings) -> Submitter:
    """The submitter ``factory_batch_system`` names."""
    name = settings.factory_batch_system
    if name not in BATCH_SYSTEMS:
        raise ConfigError(
            f"factory_batch_system must be one of {', '.join(BATCH_SYSTEMS)}, got {name!r}"
        )
    module = importlib.import_module(f"broker.factory.submitters.{name}")
    submitter: Submitter = module.submitter(settings)
    return submitter
