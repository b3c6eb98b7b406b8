"""Old jobs for the lifecycle benchmark: a database that already holds many finished
jobs, so that a run shows whether the broker's memory and speed depend on how
many rows the tables hold (they should not)."""

from __future__ import annotations

from sqlalchemy import Engine, text

from broker.errors import ConfigError
from broker.store.engine import transaction
from broker.store.sites import add_site

SEED = [
    """
    INSERT INTO jobs (id, name, site, resource_type, state, attempt, priority, max_attempts,
                      spec, pilot_id, exit_code, owner, created_at, modified_at)
    SELECT :tag || '-' || i, 'old job ' || i, :site, 'SCORE', 'finished', 1, 0, 3,
           json_build_object('command', 'true', 'id', :tag || '-' || i),
           'old-pilot-' || (i % 1000), 0, :owner,
           now() - interval '2 days' + i * interval '1 millisecond', now() - interval '1 day'
    FROM generate_series(1, :jobs) i
    """,
    """
    INSERT INTO job_attempts (job_id, attempt, site, pilot_id, state, created_at, started_at,
                              ended_at, exit_code)
    SELECT id, 1, site, pilot_id, 'finished', created_at, created_at, modified_at, 0
    FROM jobs WHERE site = :site
    """,
    """
    INSERT INTO job_transitions (job_id, attempt, from_state, to_state, at, reason)
    SELECT j.id, 1, life.states[s - 1], life.states[s],
           j.created_at + s * interval '1 second', 'old job'
    FROM jobs j, generate_series(2, 8) s,
         (SELECT ARRAY[NULL, 'defined', 'assigned', 'activated', 'sent', 'starting',
                       'running', 'finished']::text[] AS states) life
    WHERE j.site = :site
    """,
]


def seed_old_jobs(engine: Engine, jobs: int, tag: str, owner: str | None = None) -> str:
    """Add ``jobs`` finished jobs of ``owner``, each with its attempt and whole history,
    created a millisecond apart at a site of their own (PostgreSQL only); the site's name."""
    if engine.dialect.name != "postgresql":
        raise ConfigError("--old-jobs needs PostgreSQL (it fills the tables in SQL)")
    site = f"BENCH-OLD-{tag}"
    with transaction(engine) as conn:
        add_site(conn, site)
        for statement in SEED:
            conn.execute(
                text(statement), {"jobs": jobs, "site": site, "tag": f"old-{tag}", "owner": owner}
            )
    return site
