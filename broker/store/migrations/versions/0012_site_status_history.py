"""sites: who set the status, why, since when, and probes; the history of site statuses

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-03 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_by", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("status_at", Time, nullable=True))
        batch_op.add_column(sa.Column("probe_at", Time, nullable=True))
    op.create_table(
        "site_status_changes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("at", Time, nullable=False),
        sa.Column("status_by", sa.String(length=256), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["site"], ["sites.name"], name="fk_site_status_changes_site_sites"),
        sa.PrimaryKeyConstraint("id", name="pk_site_status_changes"),
    )
    op.create_index(
        "ix_site_status_changes_site_at", "site_status_changes", ["site", "at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_site_status_changes_site_at", table_name="site_status_changes")
    op.drop_table("site_status_changes")
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("probe_at")
        batch_op.drop_column("status_at")
        batch_op.drop_column("status_reason")
        batch_op.drop_column("status_by")
