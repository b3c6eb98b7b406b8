"""jobs: the priority a job was submitted with, and a user's jobs in a state counted from
an index (fair share and users' caps)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("base_priority", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_state_owner_priority", "jobs", ["state", "owner", "priority"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_owner_priority", table_name="jobs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("base_priority")
