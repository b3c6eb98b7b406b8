"""sites.toml: parsed into site configs; every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.brokerage.catalogue import ResourceSlot, read_catalogue
from broker.errors import BadInput

EXAMPLE = """
[sites.CERN]
status = "online"
se = "CERN_DATADISK"
max_walltime_s = 172800
releases = ["24.0", "25.0"]
max_queued = 500

[[sites.CERN.slots]]
cores = 1
memory_mb = 2000

[[sites.CERN.slots]]
resource_type = "MCORE_HIMEM"
cores = 8
memory_mb = 32000

[sites.BNL]
status = "brokeroff"
"""


def test_a_catalogue_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(EXAMPLE)
    cern, bnl = read_catalogue(path)
    assert cern.name == "CERN" and cern.se == "CERN_DATADISK"
    assert cern.slots == (ResourceSlot("SCORE", 1, 2000), ResourceSlot("MCORE_HIMEM", 8, 32000))
    assert cern.releases == ("24.0", "25.0") and cern.max_queued == 500
    assert (bnl.status, bnl.slots, bnl.max_walltime_s) == ("brokeroff", None, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sites.A]\nstatus = 'gone'", "status must be one of"),
        ("[sites.A]\ncolour = 'red'", "unknown key(s) colour"),
        ("[sites.A]\nmax_queued = 0", "max_queued must be a whole number of at least 1"),
        ("[sites.A]\n[[sites.A.slots]]\ncores = 2", "memory_mb is required"),
        ("[queues.A]", "unknown table(s) queues"),
        ("[sites]", "no site"),
        ("[sites.A\n", "not valid TOML"),
        ("[sites.'bad name']", "a site name must be"),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(text)
    with pytest.raises(BadInput, match=r"sites\.toml") as info:
        read_catalogue(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read site catalogue"):
        read_catalogue(tmp_path / "nope.toml")
