"""error families and kill requests

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 14:19:52.025378
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error_family", sa.String(length=16), nullable=True))

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error_family", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("kill_requested_at", sa.DateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mandatory", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("mandatory")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("kill_requested_at")
        batch_op.drop_column("error_family")

    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.drop_column("error_family")
