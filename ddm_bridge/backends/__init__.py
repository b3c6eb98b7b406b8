"""DDM backends, one module each, chosen by ``ddm_backend`` and imported when opened.

Adding a backend is one module here and one entry in ``BACKENDS``. This module
imports nothing heavy: the settings check the name against it as they load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from broker.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from broker.settings import Settings
    from ddm_bridge.backend import DDMBackend

#: ``ddm_backend`` value → ``module:Class``; the class is built with (settings, engine).
BACKENDS: dict[str, str] = {
    "local": "ddm_bridge.backends.local:LocalDDM",
    "rucio": "ddm_bridge.backends.rucio:RucioDDM",
}
#: The packaging extra a backend needs installed (``pip install 'pandamq[EXTRA]'``).
EXTRAS: dict[str, str] = {"rucio": "rucio"}


def check_name(name: str) -> None:
    """Refuse a ``ddm_backend`` that names no backend, with one line."""
    if name not in BACKENDS:
        raise ConfigError(f"ddm_backend must be one of {', '.join(BACKENDS)}, got {name!r}")


def open_backend(settings: Settings, engine: Engine) -> DDMBackend:
    """The backend ``ddm_backend`` names, built for these settings and database."""
    name = settings.ddm_backend
    check_name(name)
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(name)
        todo = f": install pandamq[{extra}] (pip install 'pandamq[{extra}]')" if extra else ""
        raise ConfigError(f"ddm_backend {name!r} cannot be loaded ({exc}){todo}") from exc
    backend: DDMBackend = getattr(module, class_name)(settings, engine)
    return backend
