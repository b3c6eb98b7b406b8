"""jobs: a site's throttled jobs read in release order from an index

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_site_state")
        batch_op.create_index(
            "ix_jobs_site_state_activity_priority_id",
            ["site", "state", "activity", sa.text("priority DESC"), "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_site_state_activity_priority_id")
        batch_op.create_index("ix_jobs_site_state", ["site", "state"], unique=False)
