"""Where a job's input files stand at its site: unknown, missing or present, decided here
alone, for new jobs (intake), set-up attempts (retries, re-brokerage) and jobs waiting
on their data (the DDM bridge).

What is known of the files is the catalogue's answer for their DIDs
(``datasets.file_replicas``: each registered file's id and the sites with an
available replica), read once per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import Connection

from broker.store.datasets import file_replicas
from broker.store.jobs import load, spec_of

#: DID → (file id, sites with an available replica), for the DIDs looked up.
Found = Mapping[str, tuple[int, set[str]]]


class Standing(StrEnum):
    """Where a job's inputs stand at its site."""

    #: Some input is not registered: the job fails with a DDM error (retrying cannot help).
    UNKNOWN = "unknown"
    #: Every input is registered, some have no available replica at the site: the job
    #: waits ``assigned`` for the DDM bridge to bring them.
    MISSING = "missing"
    #: Every input (if any) has an available replica at the site: the job may be activated.
    PRESENT = "present"


@dataclass(frozen=True)
class Inputs:
    """One job's inputs at its site: how they stand, and which are unknown or missing."""

    standing: Standing
    #: The DIDs that are not registered.
    unknown: list[str] = field(default_factory=list)
    #: The ids of the files with no available replica at the site.
    missing: list[int] = field(default_factory=list)


def inputs_at(site: str, dids: Sequence[str], found: Found) -> Inputs:
    """How the files ``dids`` stand at ``site``, by what the catalogue ``found``."""
    unknown = [d for d in dict.fromkeys(dids) if d not in found]
    if unknown:
        return Inputs(Standing.UNKNOWN, unknown=unknown)
    missing = list(dict.fromkeys(found[d][0] for d in dids if site not in found[d][1]))
    return Inputs(Standing.MISSING if missing else Standing.PRESENT, missing=missing)


def look_up(conn: Connection, dids: Iterable[str]) -> Found:
    """What the catalogue knows of ``dids``."""
    return file_replicas(conn, set(dids))


def of_jobs(conn: Connection, job_ids: Iterable[str]) -> dict[str, Inputs]:
    """How the inputs of each of these jobs stand at its site, by the job's spec."""
    rows = load(conn, job_ids)
    specs = {job_id: spec_of(row) for job_id, row in rows.items()}
    found = look_up(conn, (d for s in specs.values() for d in s.input_files))
    return {
        job_id: inputs_at(rows[job_id]["site"], spec.input_files, found)
        for job_id, spec in specs.items()
    }
