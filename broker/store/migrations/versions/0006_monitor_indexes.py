"""monitor indexes

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-26 16:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_state_modified_at_site", "jobs", ["state", "modified_at", "site"])
    op.create_index(
        "ix_jobs_task_id_state_modified_at", "jobs", ["task_id", "state", "modified_at"]
    )
    op.create_index("ix_job_attempts_state_ended_at", "job_attempts", ["state", "ended_at"])
    op.create_index("ix_pilots_last_seen", "pilots", ["last_seen"])
    op.create_index("ix_datasets_modified_at", "datasets", ["modified_at"])


def downgrade() -> None:
    op.drop_index("ix_datasets_modified_at", table_name="datasets")
    op.drop_index("ix_pilots_last_seen", table_name="pilots")
    op.drop_index("ix_job_attempts_state_ended_at", table_name="job_attempts")
    op.drop_index("ix_jobs_task_id_state_modified_at", table_name="jobs")
    op.drop_index("ix_jobs_state_modified_at_site", table_name="jobs")
