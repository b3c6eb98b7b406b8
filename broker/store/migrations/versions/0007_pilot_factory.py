"""pilot factory: pilots submitted to batch systems

Revision ID: 0007
Revises: 0002
Create Date: 2026-11-26 16:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("pilots", schema=None) as batch_op:
        batch_op.alter_column("first_seen", existing_type=Time, nullable=True)
        batch_op.alter_column("last_seen", existing_type=Time, nullable=True)
        batch_op.add_column(sa.Column("batch_system", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("batch_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("resource_type", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("walltime_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("submitted_at", Time, nullable=True))
        batch_op.add_column(sa.Column("started_at", Time, nullable=True))
        batch_op.add_column(sa.Column("ended_at", Time, nullable=True))
        batch_op.add_column(sa.Column("exit_code", sa.Integer(), nullable=True))
        batch_op.create_index("ix_pilots_site_state", ["site", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pilots", schema=None) as batch_op:
        batch_op.drop_index("ix_pilots_site_state")
        for column in (
            "exit_code",
            "ended_at",
            "started_at",
            "submitted_at",
            "state",
            "walltime_s",
            "resource_type",
            "batch_id",
            "batch_system",
        ):
            batch_op.drop_column(column)
        batch_op.alter_column("last_seen", existing_type=Time, nullable=False)
        batch_op.alter_column("first_seen", existing_type=Time, nullable=False)
