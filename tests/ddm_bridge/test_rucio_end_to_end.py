"""``ddm_backend = "rucio"`` end to end: the README's data example and a task over a
dataset, run with the CLI's own commands against a real Rucio server.

The broker service, the DDM bridge (its backend chosen by the setting) and a pilot
run in the test process (``tests.harness.System``); the commands are the README's,
through the click CLI. What the jobs wrote must be in Rucio: replicas at the site's
RSE, attached to their datasets with the adler32 of the bytes on the RSE, the
datasets closed; and ``pandamq datasets``/``dataset`` must say what Rucio says.
"""

from __future__ import annotations

import getpass
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner, Result

from broker.scopes import owner_scope
from broker.settings import Settings
from cli.main import pandamq
from ddm_bridge.se import checksum
from tests.conftest import test_settings
from tests.ddm_bridge.conftest import JOB_SCOPES, SCOPE, rucio_settings
from tests.harness import System, wait_for
from tests.rucio_server import RucioServer, rucio_server

#: The settings the CLI gets from the environment, as an operator's shell would set them.
CLI_SETTINGS = (
    "broker_url",
    "database_url",
    "ddm_root",
    "ddm_backend",
    "rucio_host",
    "rucio_account",
    "rucio_username",
    "rucio_password",
    "rucio_rses",
    "rucio_timeout_s",
    "pilot_storage",
)


def cli(settings: Settings, *args: str) -> Result:
    """``pandamq ARGS`` with ``settings`` in its environment (no config file)."""
    env: dict[str, str | None] = {
        f"PANDAMQ_{name.upper()}": str(getattr(settings, name)) for name in CLI_SETTINGS
    }
    env["PANDAMQ_CONFIG"] = None
    return CliRunner(env=env).invoke(pandamq, list(args))


@pytest.fixture
def rucio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    """A Rucio server of this test's own: the README's names (``data:run1.dat``,
    ``raw.run1``) are each test's, and a DID in Rucio names one file for ever."""
    with rucio_server(tmp_path_factory.mktemp("rucio")) as server:
        for scope in (SCOPE, "panda", *JOB_SCOPES):
            server.add_scope(scope)
        yield server


@pytest.fixture(params=["local", "rucio"])
def rucio_system(
    request: pytest.FixtureRequest,
    rucio: RucioServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[System]:
    """A pandamq system with ``ddm_backend = "rucio"`` on the test's Rucio, sites SITE_A
    and SITE_B each on an RSE of this test's own (``rucio_rses``), and its pilots reaching
    storage the ``pilot_storage`` way: the SE as a mounted directory, or Rucio's clients."""
    tag = uuid.uuid4().hex[:6].upper()
    rses = {site: f"{site}_{tag}" for site in ("SITE_A", "SITE_B")}
    settings = rucio_settings(
        rucio,
        test_settings("memory://", f"sqlite:///{tmp_path / 'p.sqlite'}", tmp_path),
        ddm_backend="rucio",
        rucio_rses=",".join(f"{site}={rse}" for site, rse in rses.items()),
        pilot_storage=request.param,
    )
    # The pilot's Rucio storage points Rucio's clients at a rucio.cfg it writes, unless
    # RUCIO_CONFIG names one: none here, and none left for the tests after this one.
    monkeypatch.delenv("RUCIO_CONFIG", raising=False)
    system = System(settings)
    try:
        for site, rse in rses.items():
            system.add_site(site)
            rucio.add_rse(rse, Path(settings.ddm_root) / site)
        system.start_broker()
        system.start_bridge()
        system.start_pilot("SITE_B")
        yield system
    finally:
        system.close()
        from rucio.common.config import clean_cached_config

        clean_cached_config()


def _replicas(rucio: RucioServer, dids: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """Rucio's replicas of ``dids`` (``file`` URLs), by DID."""
    listed = rucio.client().list_replicas(dids, schemes=["file"])
    return {f"{r['scope']}:{r['name']}": r for r in listed}


def _rucio_files(rucio: RucioServer, dataset: str) -> dict[str, dict[str, Any]]:
    return {f"{f['scope']}:{f['name']}": f for f in rucio.client().list_files("panda", dataset)}


def _check_on_rse(replica: dict[str, Any], rse: str) -> None:
    """The replica's bytes at ``rse`` match what Rucio holds for it (bytes, adler32)."""
    (pfn,) = replica["rses"][rse]
    found = checksum(Path(urlsplit(pfn).path))
    assert (found.size, found.adler32) == (replica["bytes"], replica["adler32"]), replica


def _diagnostics(system: System, job_ids: list[str]) -> list[tuple[str, int, str]]:
    """How each attempt of the jobs ended: (job, error code, diagnostic), for a failing test."""
    return [
        (job_id, a["error_code"], a["diagnostic"])
        for job_id in job_ids
        for a in system.job(job_id)["attempts"]
    ]


def _is_open(rucio: RucioServer, dataset: str) -> bool:
    return bool(rucio.client().get_metadata("panda", dataset)["is_open"])


def test_the_readme_data_example_runs_on_rucio(
    rucio_system: System, rucio: RucioServer, tmp_path: Path
) -> None:
    s = rucio_system.settings
    rse_a, rse_b = s.rse_of("SITE_A"), s.rse_of("SITE_B")
    # Given run1.dat put into raw.run1 at SITE_A, as the README does
    (tmp_path / "run1.dat").write_text("event data of run 1\n")
    added = cli(s, "datasets", "add", "raw.run1", str(tmp_path / "run1.dat"),
                "--site", "SITE_A", "--scope", "data")  # fmt: skip
    assert added.exit_code == 0, added.output
    assert set(
        _replicas(rucio, [{"scope": "data", "name": "run1.dat"}])["data:run1.dat"]["rses"]
    ) == {rse_a}
    # When a job at SITE_B that counts its bytes is submitted and waited for
    job = {
        "command": "wc -c < run1.dat > n.txt",
        "site": "SITE_B",
        "input_files": ["data:run1.dat"],
        "output_files": ["n.txt"],
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    submitted = cli(s, "submit", str(tmp_path / "job.json"), "--wait", "--timeout", "120")
    # Then it finished in its first attempt, on the copy Rucio's rule brought to SITE_B
    job_id = submitted.stdout.strip()
    assert submitted.exit_code == 0, _diagnostics(rucio_system, [job_id])
    shown = rucio_system.job(job_id)
    assert (shown["state"], shown["attempt"]) == ("finished", 1)
    run1 = _replicas(rucio, [{"scope": "data", "name": "run1.dat"}])["data:run1.dat"]
    assert set(run1["rses"]) == {rse_a, rse_b}
    _check_on_rse(run1, rse_b)
    # And its output n.txt and its log are replicas at SITE_B's RSE, attached to the job's
    # datasets with the adler32 of their bytes there
    scope = owner_scope(getpass.getuser())
    n_txt, log = f"{scope}:n.txt", f"{scope}:{job_id}.1.log.tgz"
    assert list(_rucio_files(rucio, f"{job_id}.output")) == [n_txt]
    assert list(_rucio_files(rucio, f"{job_id}.log")) == [log]
    replicas = _replicas(
        rucio, [{"scope": scope, "name": n} for n in ("n.txt", f"{job_id}.1.log.tgz")]
    )
    for did in (n_txt, log):
        assert set(replicas[did]["rses"]) == {rse_b}
        _check_on_rse(replicas[did], rse_b)
    # (uploaded by the pilot through Rucio, or staged on the SE as a directory and moved)
    staged = (Path(s.ddm_root) / "SITE_B" / ".staging").exists()
    assert staged == (s.pilot_storage == "local")
    (pfn,) = replicas[n_txt]["rses"][rse_b]
    assert Path(urlsplit(pfn).path).read_text().strip() == "20"
    # And both are closed in Rucio once the job is final
    wait_for(
        lambda: not _is_open(rucio, f"{job_id}.output") and not _is_open(rucio, f"{job_id}.log"),
        what="the job's datasets closed in Rucio",
    )
    # And `pandamq datasets` and `dataset raw.run1` say what Rucio has
    listed = {d["name"]: d for d in json.loads(cli(s, "datasets", "--json").stdout)}
    assert {"raw.run1", f"{job_id}.output", f"{job_id}.log"} <= set(listed)
    assert any(n.startswith("panda.dis.SITE_B.") for n in listed)
    assert (listed[f"{job_id}.output"]["state"], listed[f"{job_id}.output"]["files"]) == (
        "closed",
        1,
    )
    raw = json.loads(cli(s, "dataset", "raw.run1", "--json").stdout)
    ((did, sites, adler32),) = [(f["did"], f["sites"], f["adler32"]) for f in raw["files"]]
    assert (did, set(sites), adler32) == ("data:run1.dat", {"SITE_A", "SITE_B"}, run1["adler32"])
    assert [(x["site"], x["state"]) for x in raw["subscriptions"]] == [("SITE_B", "done")]
    assert "data:run1.dat" in cli(s, "dataset", "raw.run1").stdout
    # And the job's log is read back from its replica
    read = cli(s, "job", job_id, "--log")
    assert read.exit_code == 0 and "==> payload.stdout" in read.stdout, read.output


def test_a_task_over_a_dataset_runs_on_rucio(
    rucio_system: System, rucio: RucioServer, tmp_path: Path
) -> None:
    s = rucio_system.settings
    rse_b = s.rse_of("SITE_B")
    # Given an input dataset of four files at SITE_A, and a task reading it two by two at
    # SITE_B, with an id as the CLI makes one (a uuid4's 32 hex digits, longer than a
    # Rucio scope may be) and no scope made for it: its outputs go to its owner's scope
    tag = uuid.uuid4().hex[:8]
    paths = []
    for n in range(4):
        paths.append(tmp_path / f"ev.{tag}.{n}.dat")
        paths[-1].write_text(f"events {n} " * (n + 1))
    added = cli(s, "datasets", "add", f"raw.{tag}", *map(str, paths), "--site", "SITE_A",
                "--scope", "data")  # fmt: skip
    assert added.exit_code == 0, added.output
    task_id = uuid.uuid4().hex
    task = {
        "id": task_id,
        "command": "cat {inputs} > {outputs}",
        "input_dataset": f"raw.{tag}",
        "output_dataset": f"out.{tag}",
        "files_per_job": 2,
        "sites": ["SITE_B"],
        "scouts": 0,
    }
    (tmp_path / "task.json").write_text(json.dumps(task))
    # When it is submitted and waited for
    submitted = cli(s, "submit", str(tmp_path / "task.json"), "--wait", "--timeout", "150")
    # Then it is done: two jobs, each finished in its first attempt
    assert submitted.exit_code == 0, _diagnostics(
        rucio_system, [f"{task_id}-{n:06d}" for n in (1, 2)]
    )
    shown = json.loads(cli(s, "task", task_id, "--json").stdout)
    assert (shown["status"], shown["jobs"], shown["output_files"]) == ("done", 2, 2), shown
    for n in (1, 2):
        job = rucio_system.job(f"{task_id}-{n:06d}")
        assert (job["state"], job["attempt"]) == ("finished", 1), job
    # And its outputs are in the task's output dataset in Rucio, replicas at SITE_B's RSE
    # whose bytes match the adler32 Rucio holds, each the two inputs it read
    outputs = _rucio_files(rucio, f"out.{tag}")
    scope = owner_scope(rucio_system.job(f"{task_id}-000001")["owner"])
    assert sorted(outputs) == [f"{scope}:out.{tag}._{n:06d}" for n in (1, 2)]
    replicas = _replicas(
        rucio, [{"scope": f["scope"], "name": f["name"]} for f in outputs.values()]
    )
    for did, replica in replicas.items():
        _check_on_rse(replica, rse_b)
        assert replica["adler32"] == outputs[did]["adler32"]
    (first,) = replicas[f"{scope}:out.{tag}._000001"]["rses"][rse_b]
    assert Path(urlsplit(first).path).read_bytes() == paths[0].read_bytes() + paths[1].read_bytes()
    assert len(_rucio_files(rucio, f"out.{tag}.log")) == 2
    # And the output and log datasets are closed, in Rucio and in pandamq's catalogue
    wait_for(
        lambda: not _is_open(rucio, f"out.{tag}") and not _is_open(rucio, f"out.{tag}.log"),
        what="the task's datasets closed in Rucio",
    )
    listed = {d["name"]: d for d in json.loads(cli(s, "datasets", "--json").stdout)}
    assert (listed[f"out.{tag}"]["state"], listed[f"out.{tag}"]["files"]) == ("closed", 2)
    assert listed[f"out.{tag}.log"]["state"] == "closed"
