"""A job's input files as the claim reply names them, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, update

from broker.protocol import JobSpec
from broker.store.clock import now
from broker.store.datasets import file_replicas, register
from broker.store.engine import transaction
from broker.store.job_files import input_infos, link_inputs
from broker.store.jobs import insert_defined
from broker.store.schema import jobs
from broker.store.sites import add_site
from tests.broker.store.test_datasets import new_files


def test_each_input_names_the_replica_at_the_job_s_site(engine: Engine) -> None:
    # Given two files at site A, one of them also at site B, and a job at B reading both
    one, two = new_files(2)
    job_id = uuid.uuid4().hex
    with transaction(engine) as conn:
        for site in ("JF_SITE_A", "JF_SITE_B"):
            add_site(conn, site)
        dataset = f"ds.{uuid.uuid4().hex}"
        register(conn, dataset, [(f, f"/a/{f.name}") for f in (one, two)], "JF_SITE_A", now())
        register(conn, dataset, [(one, f"/b/{one.name}")], "JF_SITE_B", now())
        insert_defined(conn, [JobSpec(command="true", id=job_id)], now())
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(site="JF_SITE_B"))
        dids = [one.did, two.did]
        link_inputs(conn, [(job_id, 1, dids)], file_replicas(conn, dids))
    # When the claim reply's inputs are read, the site's storage element named by rse_of
    with transaction(engine) as conn:
        infos = input_infos(conn, [job_id], lambda site: f"{site}_DATADISK")[job_id]
    # Then the file at B names B's storage element and its path there; the other none
    by_name = {i.name: (i.rse, i.pfn, i.size, i.adler32) for i in infos}
    assert by_name == {
        one.name: ("JF_SITE_B_DATADISK", f"/b/{one.name}", one.size, one.adler32),
        two.name: ("", "", two.size, two.adler32),
    }
