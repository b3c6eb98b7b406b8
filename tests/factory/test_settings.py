"""The factory's settings and batch systems refuse what cannot work, with one clear line."""

from __future__ import annotations

import pytest

from broker.errors import ConfigError
from broker.factory.submitters import open_submitter
from broker.settings import Settings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FACTORY_MAX_RUNNING", "-1"),
        ("FACTORY_PILOT_MAX_JOBS", "-2"),
        ("FACTORY_INTERVAL_S", "0"),
        ("FACTORY_FAILURE_FRACTION", "1.5"),
    ],
)
def test_a_bad_factory_setting_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name.lower()):
        Settings.load(environ={f"PANDAMQ_{name}": value})


def test_an_unknown_batch_system_is_refused() -> None:
    with pytest.raises(ConfigError, match="factory_batch_system must be one of local, slurm"):
        open_submitter(Settings(factory_batch_system="condor"))


def test_local_pilots_need_a_broker_other_processes_reach() -> None:
    with pytest.raises(ConfigError, match="memory:// is private"):
        open_submitter(Settings(broker_url="memory://", factory_batch_system="local"))
