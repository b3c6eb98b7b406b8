"""A pilot for a site without job queues: it looks again for a while, then refuses, and
never creates a queue. Run on both transports (memory:// and RabbitMQ)."""

from __future__ import annotations

import logging
import threading

import pytest

from broker import topology
from broker.errors import UnknownSite
from broker.messaging.connection import connect
from broker.protocol import JobSpec
from broker.settings import Settings
from pilot_agent.agent import Pilot, Slot
from tests.harness import System

#: A pilot's settings here: it gives up on missing queues after 1 s, looking often.
IMPATIENT = {
    "site_queues_wait_s": 1.0,
    "reconnect_initial_delay_s": 0.05,
    "reconnect_max_delay_s": 0.2,
}


def job_queue_exists(settings: Settings, site: str) -> bool:
    """Whether RabbitMQ (or the memory transport) has the site's SCORE job queue."""
    with connect(settings) as connection:
        try:
            connection.default_channel.queue_declare(
                topology.job_queue_name(site, "SCORE"), passive=True
            )
        except connection.channel_errors as exc:
            assert str(getattr(exc, "reply_code", "")) == "404", exc  # text on memory://
            return False
    return True


def test_a_pilot_for_a_site_not_in_the_catalogue_refuses_and_leaves_nothing_behind(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a broker service, and a site that is not in its catalogue
    system.start_broker()
    site = "SITE_NOPE"
    pilot = Pilot(system.settings.replace(**IMPATIENT), Slot(site))
    # When a pilot runs for that site
    with caplog.at_level(logging.WARNING), pytest.raises(UnknownSite) as refused:
        pilot.run(threading.Event())
    # Then it refuses with one line saying why and what to do
    assert str(refused.value).startswith(
        f"site {site} is not in the catalogue, or the broker service has not declared "
        f"its queues yet (no queue pandamq.jobs.{site}."
    )
    assert f"`pandamq sites add {site}`" in str(refused.value)
    # And it warned, counting its attempts, while it looked again
    warnings = [r.getMessage() for r in caplog.records if "no job queues for its site" in r.message]
    assert len(warnings) >= 2 and "retry 2 in" in warnings[1], warnings
    # And it created no queue for the site
    assert not job_queue_exists(system.settings, site)


def test_a_pilot_started_before_its_site_has_queues_runs_jobs_once_it_has(
    system: System,
) -> None:
    # Given a broker service, and a pilot for a site the catalogue does not have yet
    system.start_broker()
    site = "SITE_LATE"
    patient = system.settings.replace(reconnect_initial_delay_s=0.05, reconnect_max_delay_s=0.2)
    system.start_pilot(site, max_jobs=1, settings=patient)
    # When the site is added and a job submitted to it (the service declares its queues)
    system.add_site(site)
    [job_id] = system.submit(JobSpec("true", site=site))
    # Then the pilot runs it
    assert system.wait_final([job_id]) == {job_id: "finished"}
