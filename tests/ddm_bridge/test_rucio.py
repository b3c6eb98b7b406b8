"""The Rucio backend on a real Rucio server: rules, a bridge restarted, jobs that wait for
their data, and each way Rucio can refuse or fail to answer."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from broker.error_codes import DDMError, ErrorFamily
from broker.errors import BadInput, DDMRefused, DDMUnavailable, RecoverableError
from broker.protocol import JobSpec
from broker.store.datasets import FileRecord
from ddm_bridge.backends.rucio import RucioDDM, connect
from ddm_bridge.se import Checksum, checksum, se_path, staging_dir
from tests.conftest import test_settings
from tests.ddm_bridge.conftest import DDM, SCOPE, backend_of, rucio_settings
from tests.harness import System, wait_for
from tests.nodes import free_port
from tests.rucio_server import RucioServer


@pytest.fixture
def ddm(rucio: RucioServer, tmp_path: Path) -> Iterator[DDM]:
    """The Rucio backend alone (the contract tests run both)."""
    with backend_of("rucio", tmp_path, rucio) as made:
        yield made


def _rules(ddm: DDM, dataset: str) -> list[dict[str, Any]]:
    assert ddm.rucio is not None
    return list(ddm.rucio.client().list_did_rules(ddm.settings.rucio_scope, dataset))


def test_a_subscription_is_one_rule_that_a_new_bridge_finds_again(ddm: DDM) -> None:
    # Given a dispatch dataset subscribed to site B, whose file Rucio is still to copy
    site_a, site_b = ddm.new_site(), ddm.new_site()
    record = ddm.put(f"in.{uuid.uuid4().hex}", site_a, b"r" * 2048)
    dispatch = ddm.dispatch([record])
    ddm.backend.subscribe(dispatch, site_b)
    (rule,) = _rules(ddm, dispatch)
    # When a new bridge's backend is given the same subscription
    again = RucioDDM(ddm.settings, ddm.engine)
    again.subscribe(dispatch, site_b)
    # Then it watches the same rule (one rule, at B's RSE, for one copy) and sees it done
    assert [r["id"] for r in _rules(ddm, dispatch)] == [rule["id"]]
    assert (rule["rse_expression"], rule["copies"]) == (site_b, 1)
    ddm.backend = again
    assert ddm.until_ended(dispatch, site_b)[-1].state == "done"
    assert ddm.rucio is not None
    assert ddm.rucio.client().get_replication_rule(rule["id"])["state"] == "OK"


def test_a_cancelled_subscription_has_its_rule_deleted(ddm: DDM) -> None:
    # Given a subscription in progress, whose rule lives a week
    site_a, site_b = ddm.new_site(), ddm.new_site()
    dispatch = ddm.dispatch([ddm.put(f"in.{uuid.uuid4().hex}", site_a, b"c")])
    ddm.backend.subscribe(dispatch, site_b)
    (rule,) = _rules(ddm, dispatch)
    assert _expires_in(rule) > timedelta(days=6)
    # When the bridge gives up on it
    ddm.backend.cancel(dispatch, site_b)
    # Then its rule is deleted as Rucio's API deletes one: it expires within the hour,
    # and the judge-cleaner removes it then
    (deleted,) = _rules(ddm, dispatch)
    assert _expires_in(deleted) <= timedelta(hours=1)


def _expires_in(rule: dict[str, Any]) -> timedelta:
    at = rule["expires_at"]
    expires = at if isinstance(at, datetime) else parsedate_to_datetime(str(at))
    return expires.replace(tzinfo=UTC) - datetime.now(UTC)


@pytest.fixture
def rucio_system(rucio: RucioServer, tmp_path: Path) -> Iterator[tuple[System, DDM]]:
    """A pandamq system whose bridge uses the session's Rucio; its sites A and B are RSEs."""
    settings = rucio_settings(
        rucio,
        test_settings("memory://", f"sqlite:///{tmp_path / 'p.sqlite'}", tmp_path),
        rucio_timeout_s=2.0,
    )
    system = System(settings)
    try:
        backend = RucioDDM(settings, system.engine)
        yield system, DDM("rucio", settings, system.engine, backend, rucio)
    finally:
        system.close()


def _sites(system: System, ddm: DDM) -> tuple[str, str]:
    sites = system.new_site(), system.new_site()
    assert ddm.rucio is not None
    for site in sites:
        ddm.rucio.add_rse(site, Path(ddm.settings.ddm_root) / site)
    return sites


def _counting_job(record: FileRecord, site: str) -> JobSpec:
    return JobSpec(
        command=f"wc -c < {record.name} > count.txt",
        site=site,
        input_files=[record.did],
        output_files=["count.txt"],
        max_attempts=1,
    )


def test_a_job_waits_for_its_input_until_rucio_s_rule_is_ok_then_runs(
    rucio_system: tuple[System, DDM],
) -> None:
    # Given an input file registered in Rucio at site A only, and a job at B that reads it
    system, ddm = rucio_system
    site_a, site_b = _sites(system, ddm)
    record = ddm.put(f"in.{uuid.uuid4().hex}", site_a, b"y" * 4000)
    system.start_broker()
    system.start_bridge(ddm.backend)
    system.start_pilot(site_b)
    # When it is submitted
    (job_id,) = system.submit(_counting_job(record, site_b))
    # Then it finishes, activated by the completion of a rule on its dispatch dataset
    assert system.wait_final([job_id], timeout_s=90) == {job_id: "finished"}
    activation = system.job(job_id)["transitions"][2]
    assert activation["to_state"] == "activated" and "panda.dis." in activation["reason"]
    copy = se_path(ddm.settings.ddm_root, site_b, record.scope, record.name)
    assert checksum(copy) == Checksum(record.size, record.adler32)
    assert ddm.rucio is not None
    replicas = ddm.rucio.client().list_replicas([{"scope": record.scope, "name": record.name}])
    assert set(next(iter(replicas))["rses"]) == {site_a, site_b}


def test_a_job_whose_rule_gets_stuck_fails_with_rucio_s_reason(
    rucio_system: tuple[System, DDM],
) -> None:
    # Given a job at B whose input's only replica, at A, is corrupt
    system, ddm = rucio_system
    site_a, site_b = _sites(system, ddm)
    record = ddm.put(f"in.{uuid.uuid4().hex}", site_a, b"z" * 300)
    se_path(ddm.settings.ddm_root, site_a, record.scope, record.name).write_bytes(b"!" * 300)
    system.start_broker()
    system.start_bridge(ddm.backend)
    # When it is submitted
    (job_id,) = system.submit(_counting_job(record, site_b))
    # Then, once Rucio's retries left the rule STUCK, the job fails with the DDM's code
    # and Rucio's reason
    assert system.wait_final([job_id], timeout_s=100) == {job_id: "failed"}
    (attempt,) = system.job(job_id)["attempts"]
    assert (attempt["error_family"], attempt["error_code"]) == (
        ErrorFamily.DDM.value,
        DDMError.SUBSCRIPTION_FAILED,
    )
    assert "STUCK" in attempt["diagnostic"] and "adler32" in attempt["diagnostic"], attempt


def test_a_job_waits_while_rucio_does_not_answer_and_runs_once_it_does(
    rucio_system: tuple[System, DDM],
) -> None:
    # Given an input registered in Rucio at A, a bridge, and a pilot at B
    system, ddm = rucio_system
    site_a, site_b = _sites(system, ddm)
    record = ddm.put(f"in.{uuid.uuid4().hex}", site_a, b"w" * 100)
    system.start_broker()
    system.start_bridge(ddm.backend)
    system.start_pilot(site_b)
    assert ddm.rucio is not None
    # When a job at B needing it is submitted while Rucio hangs
    with ddm.rucio.paused():
        (job_id,) = system.submit(_counting_job(record, site_b))
        # Then the job waits in assigned, with no failure, past the calls' timeout
        wait_for(lambda: system.states([job_id]) == {job_id: "assigned"}, what="assigned")
        time.sleep(ddm.settings.rucio_timeout_s * 2)  # the bridge's calls time out meanwhile
        assert system.states([job_id]) == {job_id: "assigned"}
    # And once Rucio answers again, it runs, in its first attempt
    assert system.wait_final([job_id], timeout_s=90) == {job_id: "finished"}
    assert system.job(job_id)["attempt"] == 1


def test_a_site_whose_rse_rucio_does_not_know_fails_its_subscription(ddm: DDM) -> None:
    # Given a site mapped to an RSE Rucio does not have
    site_a = ddm.new_site()
    dispatch = ddm.dispatch([ddm.put(f"in.{uuid.uuid4().hex}", site_a, b"u")])
    settings = ddm.settings.replace(rucio_rses="SITE_X=NO_SUCH_RSE")
    backend = RucioDDM(settings, ddm.engine)
    # When it is subscribed, Then the subscription fails at once, naming the RSE
    backend.subscribe(dispatch, "SITE_X")
    (report,) = backend.reports()
    assert report.state == "failed"
    assert "NO_SUCH_RSE" in (report.error or ""), report.error
    # And registering a file there is refused, naming the RSE
    with pytest.raises(DDMRefused, match="NO_SUCH_RSE"):
        backend.register("d", "SITE_X", [_written(ddm, site_a, "data")], "input")


def test_a_file_in_a_scope_rucio_does_not_know_is_refused(ddm: DDM) -> None:
    # Given a file on the SE in a scope Rucio does not have
    site = ddm.new_site()
    placed = _written(ddm, site, "nosuchscope")
    # When it is registered, Then Rucio's refusal names the scope
    with pytest.raises(DDMRefused, match=r"ScopeNotFound|nosuchscope"):
        ddm.backend.register(f"in.{uuid.uuid4().hex}", site, [placed], "input")


def test_a_subscription_over_the_account_s_quota_fails_with_the_reason(ddm: DDM) -> None:
    # Given a site whose RSE lets pandamq's account store nothing
    site_a, full = ddm.new_site(), ddm.new_site(limit_bytes=0)
    dispatch = ddm.dispatch([ddm.put(f"in.{uuid.uuid4().hex}", site_a, b"q" * 100)])
    # When it is subscribed, Then the subscription fails, saying the quota is exceeded
    ddm.backend.subscribe(dispatch, full)
    (report,) = ddm.backend.reports()
    assert report.state == "failed"
    assert "InsufficientAccountLimit" in (report.error or ""), report.error


def test_a_rucio_that_is_down_is_a_recoverable_error(ddm: DDM) -> None:
    # Given a Rucio host nothing listens on
    settings = ddm.settings.replace(rucio_host=f"http://127.0.0.1:{free_port()}")
    backend = RucioDDM(settings, ddm.engine)
    site = ddm.new_site()
    # When the backend is used, Then it says Rucio did not answer, recoverable
    with pytest.raises(DDMUnavailable, match="did not answer"):
        backend.subscribe(ddm.dispatch([]), site)
    with pytest.raises(RecoverableError):
        backend.register("d", site, [_written(ddm, site, "data")], "input")


def test_a_rucio_that_does_not_answer_in_time_is_a_recoverable_error(ddm: DDM) -> None:
    # Given a Rucio host that accepts connections and never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = ddm.settings.replace(rucio_host=url, rucio_timeout_s=1.0)
        backend = RucioDDM(settings, ddm.engine)
        # When the backend is used, Then it gives up after the timeout, recoverable
        with pytest.raises(DDMUnavailable, match="timed out"):
            backend.close("some.dataset")


def test_a_login_rucio_refuses_is_a_permanent_error(ddm: DDM) -> None:
    # Given pandamq's own Rucio account, and a wrong password for it
    assert ddm.rucio is not None
    account = f"pandamq{uuid.uuid4().hex[:8]}"
    ddm.rucio.add_account(account, "right")
    settings = ddm.settings.replace(
        rucio_account=account, rucio_username=account, rucio_password="wrong"
    )
    backend = RucioDDM(settings, ddm.engine)
    # When the backend logs in, Then Rucio's refusal is permanent and says so
    with pytest.raises(DDMRefused, match="CannotAuthenticate"):
        backend.close("some.dataset")


def test_a_token_rucio_no_longer_accepts_is_renewed_with_the_same_login(ddm: DDM) -> None:
    # Given pandamq's own account, logged in, whose cached token Rucio then no longer
    # accepts (as once it expired: connect() logs in and asks who it is)
    assert ddm.rucio is not None
    account = f"pandamq{uuid.uuid4().hex[:8]}"
    ddm.rucio.add_account(account, "right")
    settings = ddm.settings.replace(
        rucio_account=account, rucio_username=account, rucio_password="right"
    )
    client = connect(settings)
    Path(client.token_file).write_text(f"{account}-forged-{uuid.uuid4().hex}")
    # When the backend logs in again, Then the client gets a new token with the same login
    assert connect(settings).whoami()["account"] == account
    assert f"{account}-forged" not in Path(client.token_file).read_text()


def _written(ddm: DDM, site: str, scope: str) -> tuple[FileRecord, Path]:
    """A new file on ``site``'s SE in ``scope``, and where it is."""
    name = f"f.{uuid.uuid4().hex[:8]}"
    path = se_path(ddm.settings.ddm_root, site, scope, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"content")
    found = checksum(path)
    return FileRecord(scope, name, str(uuid.uuid4()), found.size, found.adler32), path


def test_outputs_kept_are_replicas_at_the_rse_attached_to_their_dataset_in_rucio(ddm: DDM) -> None:
    # Given two outputs an attempt staged at its site
    site, job_id = ddm.new_site(), uuid.uuid4().hex
    staging = staging_dir(ddm.settings.ddm_root, site, job_id, 1)
    staging.mkdir(parents=True)
    records = []
    for n in range(2):
        (staging / f"out.{n}").write_bytes(b"o" * (n + 9))
        found = checksum(staging / f"out.{n}")
        records.append(FileRecord(SCOPE, f"out.{n}.{job_id[:8]}", str(uuid.uuid4()), found.size,
                                  found.adler32))  # fmt: skip
        (staging / f"out.{n}").rename(staging / records[-1].name)
    output = f"out.{uuid.uuid4().hex}"
    # When the backend keeps them, twice
    for _ in range(2):
        ddm.backend.add_outputs(site, job_id, 1, [(output, r) for r in records])
    # Then Rucio's dataset holds each once with its bytes and adler32, a replica at the RSE
    assert ddm.catalogue(output) == {r.did: (r.size, r.adler32) for r in records}
    assert ddm.rucio is not None
    dids = [{"scope": r.scope, "name": r.name} for r in records]
    replicas = list(ddm.rucio.client().list_replicas(dids, rse_expression=site))
    assert sorted(f"{r['scope']}:{r['name']}" for r in replicas) == sorted(r.did for r in records)


def test_outputs_in_a_scope_rucio_does_not_have_are_refused_with_rucio_s_reason(ddm: DDM) -> None:
    # Given an output staged in a scope Rucio does not know
    site, job_id = ddm.new_site(), uuid.uuid4().hex
    staging = staging_dir(ddm.settings.ddm_root, site, job_id, 1)
    staging.mkdir(parents=True)
    (staging / "out.x").write_bytes(b"x" * 33)
    found = checksum(staging / "out.x")
    record = FileRecord("user.nobody", "out.x", str(uuid.uuid4()), found.size, found.adler32)
    # When the backend keeps it, Then it is refused, naming Rucio's reason
    with pytest.raises(BadInput, match=r"not registered in Rucio: .*Scope"):
        ddm.backend.add_outputs(site, job_id, 1, [(f"out.{uuid.uuid4().hex}", record)])


def test_outputs_a_pilot_uploaded_through_rucio_are_attached_as_they_are(ddm: DDM) -> None:
    # Given an output a pilot uploaded to its site's RSE and registered there (as Rucio's
    # upload client does), with nothing staged on the SE as a directory
    site, job_id = ddm.new_site(), uuid.uuid4().hex
    record, path = _written(ddm, site, SCOPE)
    assert ddm.rucio is not None
    replica = {"scope": SCOPE, "name": record.name, "bytes": record.size,
               "adler32": record.adler32}  # fmt: skip
    ddm.rucio.client().add_replicas(site, [replica])
    output = f"out.{uuid.uuid4().hex}"
    # When the backend keeps it, Then it is attached to its dataset where it is
    kept = ddm.backend.add_outputs(site, job_id, 1, [(output, record)])
    assert kept == {record.did: str(path)}
    assert ddm.catalogue(output) == {record.did: (record.size, record.adler32)}
    # And a report of other bytes under that name is refused, naming what Rucio has
    other = FileRecord(SCOPE, record.name, record.guid, record.size, "0badc0de")
    with pytest.raises(BadInput, match="Rucio has it at"):
        ddm.backend.add_outputs(site, job_id, 2, [(output, other)])
