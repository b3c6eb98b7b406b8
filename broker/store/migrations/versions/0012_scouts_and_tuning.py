"""scout jobs and task tuning: a task's scouts, tuning and reason; what each attempt used

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scouts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(sa.Column("tuning", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch_op.create_index("ix_tasks_status", ["status"])
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("memory_mb", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("peak_rss_mb", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cpu_time_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("wall_time_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("output_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        for name in ("output_bytes", "wall_time_s", "cpu_time_s", "peak_rss_mb", "memory_mb"):
            batch_op.drop_column(name)
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_status")
        for name in ("reason", "tuning", "scouts"):
            batch_op.drop_column(name)
