"""Settings: defaults < TOML < environment < flags, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.settings import LOCAL_RABBITMQ, Settings


def test_defaults_point_at_the_local_rabbitmq_and_sqlite() -> None:
    s = Settings.load(environ={})
    assert s.broker_url == LOCAL_RABBITMQ
    assert s.database_url.startswith("sqlite:///")
    assert s.heartbeat_interval_s == 1800


def test_environment_wins_over_toml_and_flags_win_over_both(tmp_path: Path) -> None:
    config = tmp_path / "pandamq.toml"
    config.write_text('broker_url = "memory://"\nbatch_size = 7\nheartbeat_interval_s = 5\n')
    env = {"PANDAMQ_BATCH_SIZE": "9", "PANDAMQ_CONFIG": str(config)}
    s = Settings.load(environ=env, heartbeat_interval_s=2.5)
    assert (s.broker_url, s.batch_size, s.heartbeat_interval_s) == ("memory://", 9, 2.5)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PANDAMQ_BROKER_URL": "http://x"}, "scheme must be memory, amqp or amqps"),
        ({"PANDAMQ_DATABASE_URL": "mysql://x"}, "scheme must be sqlite or postgresql"),
        ({"PANDAMQ_DATABASE_REPLICA_URL": "mysql://x"}, "database_replica_url .* postgresql"),
        ({"PANDAMQ_BATCH_SIZE": "many"}, "batch_size must be a number"),
        ({"PANDAMQ_QUEUE_TYPE": "stream"}, "queue_type must be classic or quorum"),
        ({"PANDAMQ_RUCIO_RSES": "SITE_A"}, "rucio_rses: expected SITE=RSE"),
        ({"PANDAMQ_RUCIO_AUTH_TYPE": "kerberos"}, "rucio_auth_type must be one of userpass"),
        ({"PANDAMQ_RUCIO_TIMEOUT_S": "0"}, "rucio_timeout_s must be above 0"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.load(environ=env)


def test_each_site_has_the_rse_mapped_to_it_or_one_of_its_own_name() -> None:
    # Given a map of two sites to RSEs
    s = Settings.load(environ={"PANDAMQ_RUCIO_RSES": "SITE_A=CERN-PROD_DATADISK, SITE_B=BNL"})
    # Then each has its RSE, and any other site an RSE of its own name
    assert [s.rse_of(x) for x in ("SITE_A", "SITE_B", "SITE_C")] == [
        "CERN-PROD_DATADISK",
        "BNL",
        "SITE_C",
    ]


def test_reads_go_to_the_replica_when_one_is_set() -> None:
    primary = "postgresql+psycopg://pandamq@pg1/pandamq"
    replica = "postgresql+psycopg://pandamq@pg2/pandamq"
    assert Settings(database_url=primary).reading_url() == primary
    assert Settings(database_url=primary, database_replica_url=replica).reading_url() == replica


def test_unknown_or_broken_toml_is_refused(tmp_path: Path) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text('brokr_url = "memory://"\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.load(str(typo), environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("broker_url = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(str(broken), environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        Settings.load(str(tmp_path / "missing.toml"), environ={})


def test_a_boolean_setting_takes_words_and_refuses_others() -> None:
    assert Settings.load(environ={"PANDAMQ_QUERY_PROCESS": "false"}).query_process is False
    assert Settings.load(environ={"PANDAMQ_QUERY_PROCESS": "yes"}).query_process is True
    with pytest.raises(ConfigError, match="query_process must be true or false"):
        Settings.load(environ={"PANDAMQ_QUERY_PROCESS": "maybe"})
