"""Scrape /metrics while jobs run: values move as jobs do and agree with SQL."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from broker.monitor.queries import active_counts
from broker.observability.exporter import register_gauges
from broker.observability.gauges import OTHER_USERS, SQLGauges, user_gauge
from broker.protocol import JobSpec
from broker.store.engine import transaction
from tests.broker.service.jobs import TO_RUNNING, TO_THROTTLED, a_site, a_user, put
from tests.harness import System, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def scrape(system: System) -> Iterator[str]:
    """The URL of a /metrics endpoint with the SQL gauges of the system's database."""
    register_gauges(system.settings.replace(metrics_refresh_s=0.0), system.engine)
    server, thread = start_http_server(0, addr="127.0.0.1")
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def samples(url: str) -> Samples:
    """Every sample of one scrape, by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when it is not there yet."""
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_jobs_and_agree_with_sql(system: System, scrape: str) -> None:
    # Given a broker and a site with no pilot yet
    site = system.new_site()
    system.start_broker()
    before = samples(scrape)
    # When three jobs are submitted there (one of which will fail)
    ids = system.submit(
        JobSpec(command="sleep 1", site=site),
        JobSpec(command="sleep 1", site=site),
        JobSpec(command="exit 3", site=site, max_attempts=1),
    )
    # Then they wait activated, in the queue of their site and resource type
    wait_for(lambda: set(system.states(ids).values()) == {"activated"}, what="activation")
    # (the dispatches reach RabbitMQ just after the commit that activated the jobs)
    wait_for(
        lambda: (
            value(samples(scrape), "pandamq_queue_depth", site=site, resource_type="SCORE") == 3
        ),
        what="dispatches in the site's queue",
    )
    queued = samples(scrape)
    assert value(queued, "pandamq_jobs", site=site, state="activated") == 3
    assert value(queued, "pandamq_queue_depth", site=site, resource_type="SCORE") == 3
    assert value(queued, "pandamq_pilots_alive", site=site) == 0
    with transaction(system.engine) as conn:
        sql = {state: n for (s, state), n in active_counts(conn).items() if s == site}
    assert sql == {"activated": 3}
    # When a pilot runs them
    system.start_pilot(site)
    wait_for(lambda: value(samples(scrape), "pandamq_pilots_alive", site=site) == 1, what="pilot")
    system.wait_final(ids)
    after = samples(scrape)
    # Then the gauges are empty again, and counters and histograms moved by the jobs' walk
    assert value(after, "pandamq_jobs", site=site, state="activated") == 0
    assert value(after, "pandamq_queue_depth", site=site, resource_type="SCORE") == 0

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    t = "pandamq_job_transitions_total"
    assert moved(t, site=site, from_state="activated", to_state="sent") == 3
    assert moved(t, site=site, from_state="holding", to_state="finished") == 2
    assert moved(t, site=site, from_state="holding", to_state="failed") == 1
    errors = "pandamq_job_errors_total"
    assert moved(errors, site=site, error_family="pilot", error_code="1305") == 1
    assert moved("pandamq_dispatch_latency_seconds_count", site=site) == 3
    assert moved("pandamq_queue_wait_seconds_count", site=site) == 3
    assert moved("pandamq_payload_duration_seconds_count", site=site) == 3
    # (two of them slept 1 s; the times are when the broker handled the events, so allow
    # for a batch of one waiting a little longer than the other's)
    assert moved("pandamq_payload_duration_seconds_sum", site=site) >= 1.5
    assert moved("pandamq_heartbeats_total", site=site) >= 1
    assert value(after, "process_cpu_seconds_total") > 0


def test_user_gauges_name_the_20_most_queued_users_and_sum_the_others() -> None:
    # Given 22 users, the most queued first (as the monitor lists them)
    users = [{"user": f"user.u{n:02d}", "queued": 100 - n, "running": 1} for n in range(22)]
    # When they become the gauge's values
    values = user_gauge(users)
    # Then the first 20 have their own series and the last 2 are summed as one
    assert values[("user.u00", "queued")] == 100 and values[("user.u19", "running")] == 1
    assert values[(OTHER_USERS, "queued")] == 80 + 79 and values[(OTHER_USERS, "running")] == 2
    assert len({user for user, _ in values}) == 21


def test_the_user_gauge_is_read_from_sql(engine: Engine) -> None:
    # Given a user with 2 running and 4 throttled jobs
    user, site = a_user(), a_site(engine)
    put(engine, user, site, TO_RUNNING, [0, 0])
    put(engine, user, site, TO_THROTTLED, [0] * 40)
    # When the gauges are collected, Then the user's series say so
    family = next(f for f in SQLGauges(engine, 0, 60).collect() if f.name == "pandamq_user_jobs")
    values = {tuple(s.labels.values()): s.value for s in family.samples}
    assert values[(user, "queued")] == 40 and values[(user, "running")] == 2
