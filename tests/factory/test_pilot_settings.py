"""What a factory passes on to its pilots: every setting a pilot reads, and nothing secret."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path

from broker.factory.submitter import pilot_environment
from broker.settings import PILOT_FIELDS, Settings
from cli.bundle import is_project, pilot_imports
from pilot_agent.storage import STORAGES

#: A value other than the default for every pilot setting.
CHANGED = {
    "broker_url": "amqps://pilot@rabbit.example.org:5671/grid",
    "tls_ca": "/etc/grid-security/ca.pem",
    "tls_cert": "/etc/grid-security/pilot.pem",
    "tls_key": "/etc/grid-security/pilot.key",
    "queue_type": "quorum",
    "heartbeat_interval_s": 600.0,
    "claim_timeout_s": 45.0,
    "site_queues_wait_s": 120.0,
    "confirm_timeout_s": 20.0,
    "kill_grace_s": 3.0,
    "memory_check_s": 5.0,
    "work_dir": "/scratch/pandamq-work",
    "ddm_root": "/shared/pandamq-se",
    "log_level": "DEBUG",
    "log_format": "json",
    "reconnect_initial_delay_s": 1.5,
    "reconnect_max_delay_s": 60.0,
    "pilot_storage": "rucio",
    "rucio_host": "https://rucio.example.org",
    "rucio_auth_host": "https://rucio-auth.example.org",
    "rucio_account": "pilot",
    "rucio_auth_type": "x509_proxy",
    "rucio_username": "pilot",
    "rucio_password": "pilot-password",
    "rucio_cert": "/tmp/x509up_u1000",
    "rucio_key": "/tmp/x509up_u1000",
    "rucio_ca": "/etc/grid-security/certificates",
    "rucio_rses": "SITE_A=SITE-A_DATADISK",
    "rucio_timeout_s": 30.0,
}
#: The other way a pilot logs in (a token file instead of a certificate: one or the other).
TOKEN_LOGIN = {"broker_token_file": "/var/run/pandamq/pilot.SITE_A.token"}
#: Read by modules the pilot imports, but only by functions the services call.
SERVICE_ONLY = {
    "production_role": "broker.security.identity: the service's authorisation of a sender",
    "ddm_backend": "ddm_bridge.backends: the DDM bridge opens the backend it names (the "
    "settings import the module to check the name as they load)",
}


#: Methods of the settings that read a field for their caller.
READ_THROUGH = {"rse_of": "rucio_rses"}


def settings_read_by_the_pilot() -> set[str]:
    """Settings fields named as attributes anywhere in the project modules the pilot loads,
    and in those of each storage it may open (``pilot_storage``), but for broker.settings
    itself, which checks every field."""
    names = {f.name for f in dataclasses.fields(Settings)}
    read = set()
    storages = [*(m.partition(":")[0] for m in STORAGES.values()), "ddm_bridge.rucio_login"]
    loaded = {m: str(importlib.util.find_spec(m).origin) for m in storages}  # type: ignore[union-attr]
    for module, path in {**pilot_imports(), **loaded}.items():
        if not is_project(module) or module == "broker.settings":
            continue
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, ast.Attribute) and node.attr in names:
                read.add(node.attr)
            elif isinstance(node, ast.Attribute) and node.attr in READ_THROUGH:
                read.add(READ_THROUGH[node.attr])
    return read


def test_every_setting_the_pilot_reads_is_a_pilot_setting() -> None:
    # Given the settings the pilot's code reads
    read = settings_read_by_the_pilot()
    # Then each is passed on to pilots, but for those only the services' code reads
    assert read - set(SERVICE_ONLY) <= PILOT_FIELDS, read - set(SERVICE_ONLY) - PILOT_FIELDS
    # And no pilot setting is one the pilot never reads
    assert read >= PILOT_FIELDS, PILOT_FIELDS - read


def test_a_factory_pilot_gets_every_pilot_setting_the_factory_has() -> None:
    # Given a factory whose pilot settings are all other than the defaults
    assert set(CHANGED) | set(TOKEN_LOGIN) == PILOT_FIELDS, "give each pilot setting a value"
    by_token = {k: v for k, v in CHANGED.items() if k not in ("tls_cert", "tls_key")}
    for changed in (CHANGED, {**by_token, **TOKEN_LOGIN}):
        factory = Settings(database_url="postgresql+psycopg://pandamq:secret@db/pandamq", **changed)
        # When a pilot loads its settings from the environment the factory gives it
        env = pilot_environment(factory)
        pilot = Settings.load(environ=env)
        # Then it has each of them, and not the database URL
        assert {name: getattr(pilot, name) for name in changed} == changed
        assert "PANDAMQ_DATABASE_URL" not in env
        assert not any("secret" in value for value in env.values())
