"""What the Slurm batch system writes and reads, without a Slurm."""

from __future__ import annotations

from pathlib import Path

from broker.factory.submitter import BatchStatus, PilotState, SlotShape
from broker.factory.submitters.slurm import SlurmSubmitter, parse_sacct, walltime
from broker.settings import Settings


def test_the_batch_script_asks_for_the_slot_and_starts_the_bundle(tmp_path: Path) -> None:
    # Given a factory that ships a pilot bundle
    settings = Settings(
        broker_url="amqp://u:p@rabbit//",
        database_url="postgresql://secret@db/pandamq",
        work_dir=str(tmp_path),
        factory_pilot_bundle="/shared/pilot.pyz",
        slurm_partition="grid",
    )
    # When it writes the script of an 8-core pilot
    shape = SlotShape("CERN", "MCORE", 8, 16000, 90061)
    script = SlurmSubmitter(settings).script(shape, "pilot-1")
    # Then the script asks Slurm for the slot and starts the bundle with it
    for line in (
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=16000M",
        "#SBATCH --time=1-01:01:01",
        "#SBATCH --partition=grid",
        "export PANDAMQ_BROKER_URL=amqp://u:p@rabbit//",
        "exec python3 /shared/pilot.pyz --site=CERN --cores=8 --memory=16000 --pilot-id=pilot-1",
    ):
        assert line in script, script
    # And the database stays with the factory
    assert "DATABASE" not in script


def test_walltime_and_sacct_lines() -> None:
    assert walltime(59) == "0-00:00:59"
    assert parse_sacct("12|COMPLETED|0:0\n13|CANCELLED by 0|0:15\n14|FAILED|2:0\n") == {
        "12": BatchStatus(PilotState.FINISHED, 0),
        "13": BatchStatus(PilotState.CANCELLED, 0),
        "14": BatchStatus(PilotState.FAILED, 2),
    }
