"""``pandamq datasets``, ``datasets add``, ``datasets register`` and ``dataset NAME``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from click.testing import CliRunner, Result

from broker.settings import Settings
from cli.main import pandamq
from ddm_bridge.se import checksum, se_path
from tests.harness import System


def cli(settings: Settings, *args: str) -> Result:
    """``datasets add`` and ``register`` are an operator's (database); reading is over AMQP."""
    env = {
        "PANDAMQ_BROKER_URL": settings.broker_url,
        "PANDAMQ_DATABASE_URL": settings.database_url,
        "PANDAMQ_DDM_ROOT": settings.ddm_root,
        "PANDAMQ_CONFIG": None,
    }
    return CliRunner(env=env).invoke(pandamq, list(args))


def make_settings(system: System) -> Settings:
    """A running broker service, and a site SITE_A."""
    system.add_site("SITE_A")
    system.start_broker()
    return system.settings


def test_add_copies_files_to_the_se_and_dataset_shows_them(system: System, tmp_path: Path) -> None:
    # Given two local files
    s = make_settings(system)
    paths = []
    for n in range(2):
        paths.append(tmp_path / f"f{n}.dat")
        paths[-1].write_text(f"file {n}")
    name = f"ds.{uuid.uuid4().hex[:6]}"
    # When they are added to a dataset at SITE_A
    added = cli(s, "datasets", "add", name, *map(str, paths), "--site", "SITE_A", "--scope", "d")
    # Then they are on the SE, and the dataset lists them with their replicas
    assert added.exit_code == 0, added.output
    assert f"dataset {name}: 2 file(s) added at SITE_A" in added.stdout
    copy = se_path(s.ddm_root, "SITE_A", "d", "f0.dat")
    assert checksum(copy) == checksum(paths[0])
    shown = json.loads(cli(s, "dataset", name, "--json").stdout)
    assert [(f["did"], f["sites"]) for f in shown["files"]] == [
        ("d:f0.dat", ["SITE_A"]),
        ("d:f1.dat", ["SITE_A"]),
    ]
    assert shown["files"][0]["adler32"] == checksum(paths[0]).adler32
    listed = json.loads(cli(s, "datasets", "--json").stdout)
    assert [(d["name"], d["kind"], d["files"]) for d in listed if d["name"] == name] == [
        (name, "input", 2)
    ]
    assert "d:f1.dat" in cli(s, "dataset", name).stdout


def test_register_takes_files_already_on_the_se(system: System) -> None:
    # Given a file written straight onto SITE_A's SE
    s = make_settings(system)
    path = se_path(s.ddm_root, "SITE_A", "raw", "run1.dat")
    path.parent.mkdir(parents=True)
    path.write_text("events")
    # When it is registered
    result = cli(s, "datasets", "register", "raw.run1", str(path), "--site", "SITE_A")
    # Then the dataset has it at SITE_A
    assert result.exit_code == 0, result.output
    shown = json.loads(cli(s, "dataset", "raw.run1", "--json").stdout)
    assert [(f["did"], f["sites"]) for f in shown["files"]] == [("raw:run1.dat", ["SITE_A"])]


def test_bad_requests_are_one_line_and_exit_2(system: System, tmp_path: Path) -> None:
    s = make_settings(system)
    outside = tmp_path / "elsewhere.dat"
    outside.write_text("x")
    cases = [
        (("dataset", "nope"), "pandamq: error: no dataset 'nope'"),
        (
            ("datasets", "add", "ds", str(outside), "--site", "NOWHERE"),
            "pandamq: error: site 'NOWHERE' is not in the site catalogue",
        ),
    ]
    for args, line in cases:
        result = cli(s, *args)
        assert (result.exit_code, result.stderr.strip()) == (2, line)
    result = cli(s, "datasets", "register", "ds", str(outside), "--site", "SITE_A")
    assert result.exit_code == 2 and "is not a file at <SE>/<scope>/<name>" in result.stderr
