"""Settings: one typed object built from a TOML file and ``PANDAMQ_*`` variables.

Precedence, lowest first: defaults, the TOML file (``--config`` or
``PANDAMQ_CONFIG``), the environment, explicit overrides (command-line flags).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker.errors import ConfigError
from ddm_bridge.backends import check_name

ENV_PREFIX = "PANDAMQ_"
LOCAL_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def default_database_url() -> str:
    """SQLite in the user's data directory, shared by every local process."""
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return f"sqlite:///{base / 'pandamq' / 'pandamq.sqlite'}"


@dataclass(frozen=True)
class Settings:
    """Everything a pandamq process can be configured with."""

    broker_url: str = LOCAL_RABBITMQ
    database_url: str = dataclasses.field(default_factory=default_database_url)
    #: A streaming replica of the database that the web monitor and the submitter's
    #: list queries read; empty: they read ``database_url``.
    database_replica_url: str = ""
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: A file holding a JWT access token, the login instead of a password or certificate
    #: (RabbitMQ's oauth2 backend); read again at every connection, so a renewed one is used.
    broker_token_file: str | None = None
    queue_type: str = "classic"
    heartbeat_interval_s: float = 1800.0
    claim_timeout_s: float = 30.0
    #: How long a submitter waits for the broker service's answer to a request.
    request_timeout_s: float = 30.0
    #: Answer the submitter's queries in a process of their own (RabbitMQ only; the
    #: in-process transport answers them in a thread).
    query_process: bool = True
    site_queues_wait_s: float = 60.0
    batch_size: int = 500
    #: A message body longer than this is dead-lettered unread by the service consuming it.
    max_message_bytes: int = 16 * 1024 * 1024
    publish_window: int = 1000
    confirm_timeout_s: float = 30.0
    poll_interval_s: float = 0.05
    # watchdog timeouts (PanDA's defaults) and retries
    watchdog_interval_s: float = 60.0
    lost_heartbeat_s: float = 7200.0
    sent_timeout_s: float = 1800.0
    #: An activated job whose site's queue has lost its dispatch (a pilot purged it)
    #: is dispatched again once it has waited this long (checked every watchdog pass).
    redispatch_after_s: float = 300.0
    holding_timeout_s: float = 10800.0
    transferring_timeout_s: float = 172800.0
    assigned_timeout_s: float = 14400.0
    memory_retry_factor: float = 1.5
    #: A job retried by ``increase_walltime`` asks for this much more walltime.
    walltime_retry_factor: float = 1.5
    #: A retried attempt waits about this long (twice as long after each failed attempt,
    #: up to ``retry_backoff_max_s``, with jitter) before it is set up; 0: no wait.
    retry_backoff_s: float = 60.0
    retry_backoff_max_s: float = 3600.0
    # scout jobs and task tuning (docs/reliability.md, "Scout jobs and task tuning")
    #: Scout jobs of a task whose spec names no ``scouts`` (0: none).
    scout_jobs: int = 0
    #: Added to the priority of a task's scout jobs.
    scout_priority_boost: int = 100
    #: The percentile of the measured jobs that a task's jobs are tuned to.
    tuning_percentile: float = 95.0
    #: Tuned memory: the percentile of the measured peaks, this fraction more.
    tuning_memory_margin: float = 0.2
    #: Tuned walltime: the percentile of the measured wall times, this fraction more.
    tuning_walltime_margin: float = 0.5
    #: A task is exhausted after this many of its jobs ran out of memory at the
    #: largest memory any of its sites offers.
    exhaust_memory_failures: int = 3
    kill_grace_s: float = 10.0
    #: How often a pilot measures its payload's memory (the limit, and the peak it reports).
    memory_check_s: float = 1.0
    work_dir: str = dataclasses.field(default_factory=lambda: str(Path.cwd() / "pandamq-work"))
    log_level: str = "INFO"
    # waiting out an outage of RabbitMQ or the database (broker/reconnect.py)
    reconnect_initial_delay_s: float = 0.5
    reconnect_max_delay_s: float = 30.0
    # brokerage, throttling and re-brokerage (docs/brokerage.md)
    brokerage_data_weight: float = 10.0
    throttle_min_activated: int = 20
    throttle_running_factor: float = 2.0
    activity_shares: str = "production=80,analysis=20"
    brokerage_interval_s: float = 10.0
    rebrokerage_idle_s: float = 3600.0
    # fair share between users (docs/brokerage.md, "Users"); a cap of 0 is no cap
    #: A user's waiting jobs lose 1 priority per this many of the user's jobs ahead of
    #: them (PanDA's base - (active + n) / 5); 0: priorities are left as submitted.
    user_priority_step: int = 5
    #: A submission that would leave its user with more queued jobs is refused.
    user_max_queued: int = 0
    #: Brokerage leaves out a site where the user has this many queued jobs already.
    user_max_queued_per_site: int = 0
    #: A user's jobs are activated only while the user has fewer activated and running ...
    user_max_running: int = 0
    #: ... and fewer at the job's site; the others stay throttled.
    user_max_running_per_site: int = 0
    #: One user's own caps, ``USER:CAP=N,...`` with CAP max_queued, max_queued_per_site,
    #: max_running or max_running_per_site, e.g. ``user.prod:max_running=5000``.
    user_caps: str = ""
    # the planner's statistics of the hot tables (broker/store/statistics.py):
    # how often the broker service checks them; 0 leaves them to the operator
    statistics_interval_s: float = 2.0
    #: How long a service process holds a duty of periodic work it took, or the DDM
    #: subscriptions it serves, without renewing: a process that died frees them after
    #: this (docs/operations.md, "Scaling out"). Longer than any one pass.
    lease_s: float = 60.0
    # failing sites left out (docs/brokerage.md, "Failing sites left out")
    #: A task's failures at a site count over this window ...
    exclusion_window_s: float = 3600.0
    #: ... and leave the site out for the task from this many failures ...
    exclusion_min_failures: int = 3
    #: ... when they are more than this many times the task's finished jobs there.
    exclusion_failure_ratio: float = 2.0
    #: A site whose jobs all failed (at least site_test_min_failures) over this window
    #: goes to status test.
    site_test_window_s: float = 1800.0
    site_test_min_failures: int = 10
    #: A site with jobs sent to pilots this long ago that never started goes to test.
    site_start_timeout_s: float = 900.0
    #: Probe jobs a site in test (by the automatic rule) takes at once.
    site_probe_jobs: int = 2
    #: After its probe jobs failed, a site in test gets new probes after this long.
    site_probe_interval_s: float = 600.0
    # data management (ddm_bridge): the backend (ddm_bridge/backends), the local DDM's
    # storage elements and transfers
    ddm_backend: str = "local"
    ddm_root: str = dataclasses.field(default_factory=lambda: str(Path.cwd() / "pandamq-se"))
    transfer_threads: int = 4
    transfer_retries: int = 3
    transfer_delay_s: float = 0.0
    subscription_timeout_s: float = 3600.0
    ddm_poll_interval_s: float = 0.5
    #: How the pilot reaches its site's storage (pilot_agent/storage): ``local``, the SE as
    #: a directory, or ``rucio``, Rucio's upload and download clients.
    pilot_storage: str = "local"

    # security (broker/security/): identities with the production role, comma-separated
    production_role: str = ""

    # Rucio as the DDM (ddm_bridge/backends/rucio.py, docs/ddm.md "Pointing pandamq at a Rucio")
    #: The Rucio server's REST URL, and its authentication server's (empty: the same).
    rucio_host: str = ""
    rucio_auth_host: str = ""
    #: The Rucio account pandamq acts as, and how it logs in: userpass, x509 or x509_proxy.
    rucio_account: str = ""
    rucio_auth_type: str = "userpass"
    rucio_username: str = ""
    rucio_password: str = ""
    #: x509: the client certificate and key (x509_proxy: the proxy file in both).
    rucio_cert: str = ""
    rucio_key: str = ""
    #: The CA bundle (or directory) that verifies an https Rucio; empty: the system's.
    rucio_ca: str = ""
    #: The scope of the datasets pandamq makes in Rucio (dispatch, output, log).
    rucio_scope: str = "panda"
    #: Each site's RSE: ``SITE=RSE,...``; a site not named has an RSE of its own name.
    rucio_rses: str = ""
    #: How long one call to Rucio may take, and how long a dispatch rule lives.
    rucio_timeout_s: float = 60.0
    rucio_rule_lifetime_s: int = 7 * 86400
    #: The least time between two looks at the rules of the subscriptions in progress.
    rucio_poll_interval_s: float = 2.0

    # observability (broker/observability/, broker/monitor/)
    metrics_port: int = 0
    metrics_refresh_s: float = 15.0
    pilot_seen_s: float = 10800.0
    monitor_host: str = "127.0.0.1"
    monitor_port: int = 8080
    log_format: str = "text"

    # the pilot factory (broker/factory, docs/factory.md); limits are per site
    factory_sites: str = ""
    factory_batch_system: str = "local"
    factory_interval_s: float = 30.0
    factory_max_queued: int = 10
    factory_max_running: int = 100
    factory_max_submit: int = 20
    factory_pilot_max_jobs: int = 0
    factory_pilot_idle_s: float = 300.0
    factory_walltime_s: int = 172800
    factory_pilot_bundle: str = ""
    factory_failure_window: int = 20
    factory_failure_fraction: float = 0.5
    slurm_partition: str = ""

    def shares(self) -> dict[str, float]:
        """``activity_shares`` as activity → share, e.g. ``{"production": 80.0}``."""
        shares = {}
        for item in filter(None, (p.strip() for p in self.activity_shares.split(","))):
            name, _, value = item.partition("=")
            try:
                shares[name.strip()] = float(value)
            except ValueError as exc:
                raise ConfigError(
                    f"activity_shares: expected ACTIVITY=SHARE, ..., got {item!r}"
                ) from exc
        if any(v <= 0 for v in shares.values()):
            raise ConfigError("activity_shares: every share must be above 0")
        return shares

    def user_cap_overrides(self) -> dict[str, dict[str, int]]:
        """``user_caps`` as user → cap → count, e.g. ``{"user.prod": {"max_running": 5000}}``."""
        caps: dict[str, dict[str, int]] = {}
        for item in filter(None, (p.strip() for p in self.user_caps.split(","))):
            user, _, rest = item.rpartition(":")
            cap, _, value = rest.partition("=")
            if not user or cap.strip() not in USER_CAPS or not value.strip().isdigit():
                raise ConfigError(
                    f"user_caps: expected USER:CAP=N with CAP one of {', '.join(USER_CAPS)} "
                    f"and N a count, got {item!r}"
                )
            caps.setdefault(user.strip(), {})[cap.strip()] = int(value)
        return caps

    def rse_of(self, site: str) -> str:
        """The Rucio RSE of ``site`` (``rucio_rses``; the site's own name if not listed)."""
        return self.rse_map().get(site, site)

    def rse_map(self) -> dict[str, str]:
        """``rucio_rses`` as site → RSE."""
        rses = {}
        for item in filter(None, (p.strip() for p in self.rucio_rses.split(","))):
            site, _, rse = item.partition("=")
            if not site.strip() or not rse.strip():
                raise ConfigError(f"rucio_rses: expected SITE=RSE, ..., got {item!r}")
            rses[site.strip()] = rse.strip()
        return rses

    def reading_url(self) -> str:
        """The database that read-only pages and lists may read: the replica, if any."""
        return self.database_replica_url or self.database_url

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed; ``None`` values are ignored."""
        given = {k: v for k, v in changes.items() if v is not None}
        return _coerce_all({**dataclasses.asdict(self), **given})

    @classmethod
    def load(
        cls,
        config_file: str | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Defaults, then TOML, then environment, then overrides."""
        env = os.environ if environ is None else environ
        path = config_file or env.get(ENV_PREFIX + "CONFIG")
        values: dict[str, Any] = dataclasses.asdict(cls())
        if path:
            values.update(_read_toml(Path(path)))
        values.update(_read_env(env))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return _coerce_all(values)


#: The caps ``user_caps`` may set for one user (each also a ``user_`` setting for all).
USER_CAPS = ("max_queued", "max_queued_per_site", "max_running", "max_running_per_site")


#: The settings a pilot reads, which a factory passes on to the pilots it starts
#: (``broker.factory.submitter.pilot_environment``); tests/factory/test_pilot_settings.py
#: checks them against what the pilot's modules read. Never the database URL: a pilot
#: speaks AMQP only.
PILOT_FIELDS = frozenset(
    {
        "broker_url",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "broker_token_file",
        "queue_type",
        "heartbeat_interval_s",
        "claim_timeout_s",
        "site_queues_wait_s",
        "confirm_timeout_s",
        "kill_grace_s",
        "memory_check_s",
        "work_dir",
        "ddm_root",
        "pilot_storage",
        "rucio_host",
        "rucio_auth_host",
        "rucio_account",
        "rucio_auth_type",
        "rucio_username",
        "rucio_password",
        "rucio_cert",
        "rucio_key",
        "rucio_ca",
        "rucio_rses",
        "rucio_timeout_s",
        "log_level",
        "log_format",
        "reconnect_initial_delay_s",
        "reconnect_max_delay_s",
    }
)


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(Settings)}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(_field_types()))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return data


def _read_env(env: Mapping[str, str]) -> dict[str, str]:
    names = _field_types()
    return {
        name: env[ENV_PREFIX + name.upper()] for name in names if ENV_PREFIX + name.upper() in env
    }


def _coerce_all(values: Mapping[str, Any]) -> Settings:
    types = _field_types()
    coerced = {name: _coerce(name, types[name], value) for name, value in values.items()}
    settings = Settings(**coerced)
    _check(settings)
    return settings


def _coerce(name: str, type_name: str, value: Any) -> Any:
    if value is None or "None" in type_name:
        return value
    if type_name == "bool":
        return _boolean(name, value)
    try:
        if type_name == "int":
            return int(value)
        if type_name == "float":
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name} must be a number, got {value!r}") from exc
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in _BOOLEANS:
        raise ConfigError(f"setting {name} must be true or false, got {value!r}")
    return _BOOLEANS[word]


def broker_nodes(broker_url: str) -> list[str]:
    """The URLs in ``broker_url``: one per RabbitMQ node of a cluster, separated by ``;``
    (kombu's convention), tried in turn until one accepts the connection."""
    return [url.strip() for url in broker_url.split(";") if url.strip()]


def _check(settings: Settings) -> None:
    schemes = {url.split("://", 1)[0] for url in broker_nodes(settings.broker_url)}
    if len(schemes) != 1 or not schemes <= {"memory", "amqp", "amqps"}:
        raise ConfigError(
            f"broker_url {settings.broker_url!r}: scheme must be memory, amqp or amqps, "
            "the same for every node"
        )
    _check_login(settings)
    _check_database_url("database_url", settings.database_url)
    if settings.database_replica_url:
        _check_database_url("database_replica_url", settings.database_replica_url)
    if settings.queue_type not in {"classic", "quorum"}:
        raise ConfigError(f"queue_type must be classic or quorum, got {settings.queue_type!r}")
    if settings.batch_size < 1 or settings.publish_window < 1:
        raise ConfigError("batch_size and publish_window must be at least 1")
    settings.shares()
    settings.user_cap_overrides()
    if settings.throttle_min_activated < 1:
        raise ConfigError("throttle_min_activated must be at least 1")
    _check_exclusion(settings)
    if settings.transfer_threads < 1 or settings.transfer_retries < 0:
        raise ConfigError("transfer_threads must be at least 1 and transfer_retries at least 0")
    _check_observability(settings)
    if not 0 < settings.reconnect_initial_delay_s <= settings.reconnect_max_delay_s:
        raise ConfigError(
            "reconnect_initial_delay_s must be above 0 and at most reconnect_max_delay_s"
        )
    _check_factory(settings)
    _check_rucio(settings)
    _check_retries(settings)
    _check_tuning(settings)
    _check_ddm_backend(settings)


def _check_ddm_backend(settings: Settings) -> None:
    # The backends' names live with the backends (a light module: the pilot loads settings).
    check_name(settings.ddm_backend)
    if settings.pilot_storage not in PILOT_STORAGES:
        raise ConfigError(
            f"pilot_storage must be one of {', '.join(PILOT_STORAGES)}, "
            f"got {settings.pilot_storage!r}"
        )


def _check_login(settings: Settings) -> None:
    if not settings.broker_token_file:
        return
    if settings.tls_cert:
        raise ConfigError("broker_token_file and tls_cert are two logins: set one of them")
    if any(urlsplit(url).password for url in broker_nodes(settings.broker_url)):
        raise ConfigError(
            "broker_url has a password and broker_token_file is set: the token is the "
            "password, leave the user and password out of the URL"
        )


def _check_database_url(name: str, url: str) -> None:
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in {"sqlite", "postgresql"}:
        raise ConfigError(f"{name} {url!r}: scheme must be sqlite or postgresql")


def _check_tuning(settings: Settings) -> None:
    if settings.memory_check_s <= 0:
        raise ConfigError(f"memory_check_s must be above 0, got {settings.memory_check_s}")
    if settings.scout_jobs < 0:
        raise ConfigError(f"scout_jobs must not be negative, got {settings.scout_jobs}")
    if not 0 < settings.tuning_percentile <= 100:
        raise ConfigError("tuning_percentile must be above 0 and at most 100")
    if settings.tuning_memory_margin < 0 or settings.tuning_walltime_margin < 0:
        raise ConfigError("tuning_memory_margin and tuning_walltime_margin must not be negative")
    if settings.exhaust_memory_failures < 1:
        raise ConfigError("exhaust_memory_failures must be at least 1")


#: The ways a pilot reaches storage (``pilot_agent.storage.STORAGES`` maps each to its class).
PILOT_STORAGES = ("local", "rucio")
RUCIO_AUTH_TYPES = ("userpass", "x509", "x509_proxy")


def _check_rucio(settings: Settings) -> None:
    settings.rse_map()
    if settings.rucio_auth_type not in RUCIO_AUTH_TYPES:
        raise ConfigError(
            f"rucio_auth_type must be one of {', '.join(RUCIO_AUTH_TYPES)}, "
            f"got {settings.rucio_auth_type!r}"
        )
    if settings.rucio_timeout_s <= 0 or settings.rucio_poll_interval_s < 0:
        raise ConfigError("rucio_timeout_s must be above 0 and rucio_poll_interval_s at least 0")
    if settings.rucio_rule_lifetime_s < 1:
        raise ConfigError("rucio_rule_lifetime_s must be at least 1")


def _check_retries(settings: Settings) -> None:
    if not 0 <= settings.retry_backoff_s <= settings.retry_backoff_max_s:
        raise ConfigError("retry_backoff_s must be at least 0 and at most retry_backoff_max_s")
    if settings.walltime_retry_factor < 1:
        raise ConfigError("walltime_retry_factor must be at least 1")


def _check_exclusion(settings: Settings) -> None:
    for name in ("exclusion_min_failures", "site_test_min_failures", "site_probe_jobs"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(settings, name)}")
    for name in (
        "exclusion_window_s",
        "site_test_window_s",
        "site_start_timeout_s",
        "site_probe_interval_s",
    ):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be above 0, got {getattr(settings, name)}")
    if settings.exclusion_failure_ratio < 0:
        raise ConfigError("exclusion_failure_ratio must not be negative")


def _check_observability(settings: Settings) -> None:
    for name in ("metrics_port", "monitor_port"):
        if not 0 <= getattr(settings, name) <= 65535:
            raise ConfigError(f"{name} must be a TCP port (0 to 65535; 0 = off or any free port)")
    if settings.log_format not in {"text", "json"}:
        raise ConfigError(f"log_format must be text or json, got {settings.log_format!r}")


#: Settings that are counts (0 meaning none, or no limit).
NOT_NEGATIVE = (
    "user_priority_step",
    "user_max_queued",
    "user_max_queued_per_site",
    "user_max_running",
    "user_max_running_per_site",
    "factory_max_queued",
    "factory_max_running",
    "factory_max_submit",
    "factory_pilot_max_jobs",
)


def _check_factory(settings: Settings) -> None:
    for name in NOT_NEGATIVE:
        if getattr(settings, name) < 0:
            raise ConfigError(f"{name} must not be negative, got {getattr(settings, name)}")
    for name in ("factory_interval_s", "factory_pilot_idle_s", "lease_s"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be above 0, got {getattr(settings, name)}")
    if not 0 < settings.factory_failure_fraction <= 1:
        raise ConfigError("factory_failure_fraction must be above 0 and at most 1")
