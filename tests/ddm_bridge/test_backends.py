"""The DDM backend is chosen by ``ddm_backend``, through one registry, imported lazily."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from broker.errors import ConfigError
from broker.settings import Settings
from ddm_bridge.backends import BACKENDS, open_backend
from ddm_bridge.backends.local import LocalDDM
from ddm_bridge.bridge import DDMBridge


def test_an_unknown_backend_is_refused_as_the_settings_load() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.load(environ={"PANDAMQ_DDM_BACKEND": "nfs"})
    assert str(refused.value) == "ddm_backend must be one of local, rucio, got 'nfs'"


def test_each_backend_names_a_module_and_a_class_of_this_package() -> None:
    for target in BACKENDS.values():
        module, _, name = target.partition(":")
        assert module.startswith("ddm_bridge.backends.") and name


def test_the_bridge_opens_the_backend_the_setting_names(engine: Engine, tmp_path: Path) -> None:
    settings = Settings(ddm_backend="local", ddm_root=str(tmp_path))
    bridge = DDMBridge(settings, engine)
    try:
        assert isinstance(bridge.backend, LocalDDM)
    finally:
        bridge.backend.stop()


def test_a_backend_that_cannot_be_imported_says_which_extra_to_install(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a machine where the Rucio backend cannot be imported (its extra is missing)
    monkeypatch.setitem(sys.modules, "ddm_bridge.backends.rucio", None)
    settings = Settings(ddm_backend="rucio", ddm_root=str(tmp_path))
    # When a backend is opened, then one line says what to install
    with pytest.raises(ConfigError) as refused:
        open_backend(settings, engine)
    text = str(refused.value)
    assert "\n" not in text
    assert text.startswith("ddm_backend 'rucio' cannot be loaded")
    assert text.endswith("install pandamq[rucio] (pip install 'pandamq[rucio]')")
