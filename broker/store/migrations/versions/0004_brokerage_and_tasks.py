"""brokerage and tasks: the site catalogue, task specs, each job's brokerage record

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("se", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("slots", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("max_walltime_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("releases", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("max_queued", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("modified_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spec", sa.JSON(), nullable=True))

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("activity", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("brokerage", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("brokerage")
        batch_op.drop_column("activity")

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("spec")

    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("modified_at")
        batch_op.drop_column("max_queued")
        batch_op.drop_column("releases")
        batch_op.drop_column("max_walltime_s")
        batch_op.drop_column("slots")
        batch_op.drop_column("se")
