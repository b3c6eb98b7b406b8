"""reported_outputs: what pilots reported of attempts that ended with files, until the
DDM bridge registers them (PanDA's Adder)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reported_outputs",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bridge", sa.String(length=128), nullable=True),
        sa.Column("bridge_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_reported_outputs_job_id_jobs")
        ),
        sa.PrimaryKeyConstraint("job_id", "attempt", name=op.f("pk_reported_outputs")),
    )


def downgrade() -> None:
    op.drop_table("reported_outputs")
