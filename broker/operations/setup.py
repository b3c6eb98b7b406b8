"""Set up placed job attempts: assign them, and activate those whose inputs are at their site.

A job whose inputs are missing at its site stays ``assigned``: the DDM bridge
subscribes the site to a dispatch dataset that brings them, and activates the
job when the subscription completes. A job naming an input file that is not
registered fails at once with a DDM error (it cannot be fixed by retrying).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from broker.error_codes import DDMError, ErrorFamily
from broker.operations.activation import JobRef, Placement, activate, assign
from broker.operations.throttle import Limits
from broker.states import JobState
from broker.store import transitions
from broker.store.datasets import replica_sites
from broker.store.job_files import link_inputs
from broker.store.transitions import Change

log = logging.getLogger(__name__)

S = JobState

#: Why a job whose inputs all have a replica at its site is activated.
AT_SITE = "all input files are at the site"


def set_up(conn: Connection, placements: list[Placement], now: datetime, limits: Limits) -> int:
    """Assign every placement; activate those with nothing to wait for (within the sites'
    ``limits``); how many activated."""
    assigned = assign(conn, placements, now)
    with_inputs = [p for p in assigned if p.spec.input_files]
    unknown = link_inputs(conn, [(p.spec.id, p.attempt, p.spec.input_files) for p in with_inputs])
    _fail_unknown(conn, [p for p in with_inputs if p.spec.id in unknown], unknown, now)
    missing = _missing_at_site(conn, [p for p in with_inputs if p.spec.id not in unknown])
    waiting_for_inputs(len(missing))
    ready = [p for p in assigned if p.spec.id not in unknown and p.spec.id not in missing]
    at_site = [JobRef(p.spec.id, p.attempt) for p in ready if p.spec.input_files]
    no_inputs = [JobRef(p.spec.id, p.attempt) for p in ready if not p.spec.input_files]
    return activate(conn, at_site, now, limits, AT_SITE) + activate(conn, no_inputs, now, limits)


def waiting_for_inputs(n: int) -> None:
    """Log how many jobs were left ``assigned`` for their inputs to reach their site."""
    if n:
        log.info("%d job(s) wait in assigned for input files to reach their site", n)


def _missing_at_site(conn: Connection, placements: list[Placement]) -> set[str]:
    """The jobs with an input file that has no available replica at their site.

    Worked out from the files' replicas, not by joining the job's links just
    written: a task's new links are not in the planner's statistics yet.
    """
    where = replica_sites(conn, {d for p in placements for d in p.spec.input_files})
    return {
        p.spec.id
        for p in placements
        if any(p.site not in where.get(d, ()) for d in p.spec.input_files)
    }


def unregistered(job_id: str, dids: list[str]) -> tuple[str, dict[str, Any]]:
    """Why a job naming input files that are not registered fails, and the columns set
    as it does (a DDM error: retrying cannot fix it); logged."""
    text = f"input file(s) not registered: {', '.join(dids[:5])}"
    log.warning("job %s failed: %s", job_id, text)
    values = {
        "error_family": ErrorFamily.DDM.value,
        "error_code": int(DDMError.UNKNOWN_INPUT),
        "diagnostic": text,
    }
    return text, values


def _fail_unknown(
    conn: Connection, placements: list[Placement], unknown: dict[str, list[str]], now: datetime
) -> None:
    changes = []
    for p in placements:
        why, values = unregistered(p.spec.id, unknown[p.spec.id])
        changes.append(Change(p.spec.id, p.attempt, S.ASSIGNED, S.FAILED, why, values=values))
    transitions.apply(conn, changes, now)
