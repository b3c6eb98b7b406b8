"""One path decides whether a job's inputs are unknown, missing or present at its site."""

from __future__ import annotations

from broker.operations.inputs import Inputs, Standing, inputs_at

#: What the catalogue knows: a.root is at SITE_A only, b.root at both sites.
FOUND = {"u:a.root": (1, {"SITE_A"}), "u:b.root": (2, {"SITE_A", "SITE_B"})}


def test_a_job_naming_an_unregistered_file_has_unknown_inputs() -> None:
    assert inputs_at("SITE_A", ["u:a.root", "u:nowhere"], FOUND) == Inputs(
        Standing.UNKNOWN, unknown=["u:nowhere"]
    )


def test_a_job_whose_file_has_no_replica_at_its_site_misses_that_file() -> None:
    assert inputs_at("SITE_B", ["u:a.root", "u:b.root"], FOUND) == Inputs(
        Standing.MISSING, missing=[1]
    )


def test_a_job_with_every_file_at_its_site_or_none_named_has_them_present() -> None:
    assert inputs_at("SITE_A", ["u:a.root", "u:b.root"], FOUND).standing == Standing.PRESENT
    assert inputs_at("SITE_B", [], FOUND).standing == Standing.PRESENT
