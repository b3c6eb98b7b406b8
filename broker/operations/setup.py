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
from broker.operations.inputs import Standing, inputs_at, look_up
from broker.operations.throttle import Limits
from broker.states import JobState
from broker.store import transitions
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
    found = look_up(conn, (d for p in with_inputs for d in p.spec.input_files))
    link_inputs(conn, [(p.spec.id, p.attempt, p.spec.input_files) for p in with_inputs], found)
    stand = {p.spec.id: inputs_at(p.site, p.spec.input_files, found) for p in assigned}
    unknown = {j: i.unknown for j, i in stand.items() if i.standing == Standing.UNKNOWN}
    _fail_unknown(conn, [p for p in with_inputs if p.spec.id in unknown], unknown, now)
    waiting_for_inputs(sum(i.standing == Standing.MISSING for i in stand.values()))
    ready = [p for p in assigned if stand[p.spec.id].standing == Standing.PRESENT]
    at_site = [JobRef(p.spec.id, p.attempt) for p in ready if p.spec.input_files]
    no_inputs = [JobRef(p.spec.id, p.attempt) for p in ready if not p.spec.input_files]
    return activate(conn, at_site, now, limits, AT_SITE) + activate(conn, no_inputs, now, limits)


def waiting_for_inputs(n: int) -> None:
    """Log how many jobs were left ``assigned`` for their inputs to reach their site."""
    if n:
        log.info("%d job(s) wait in assigned for input files to reach their site", n)


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
