"""Quorum queues (RabbitMQ's replicated queues) carry a job's whole life too."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from broker.errors import BrokerRefused
from broker.protocol import JobSpec
from broker.service.server import BrokerService
from broker.store.engine import open_engine
from tests.conftest import test_settings
from tests.harness import System
from tests.services import postgres_database, rabbitmq_vhost

pytestmark = pytest.mark.services


def test_a_job_finishes_on_quorum_queues(tmp_path: Path) -> None:
    # Given a vhost of its own, where every durable queue is a quorum queue, and a
    # database of its own (the broker declares the queues of every site it knows,
    # and the session's database has the sites of every other test)
    with rabbitmq_vhost() as broker_url, postgres_database() as database_url:
        settings = replace(test_settings(broker_url, database_url, tmp_path), queue_type="quorum")
        system = System(settings)
        try:
            site = system.new_site()
            system.start_broker()
            # a pilot consuming several resource-type queues of its site
            system.start_pilot(site, cores=8, memory_mb=32000)
            # When a job is submitted, Then it finishes
            (job_id,) = system.submit(JobSpec(command="true", site=site))
            assert system.wait_final([job_id]) == {job_id: "finished"}
        finally:
            system.close()

        # And a broker configured for classic queues is refused in one clear error
        classic = replace(settings, queue_type="classic")
        engine = open_engine(classic.database_url)
        try:
            with pytest.raises(BrokerRefused, match="inequivalent arg 'x-queue-type'"):
                BrokerService(classic, engine).run(threading.Event())
        finally:
            engine.dispose()
