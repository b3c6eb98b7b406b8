"""ddm data model

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 15:56:00.138775
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("guid", sa.String(length=36), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("adler32", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.UniqueConstraint("scope", "name", name=op.f("uq_files_scope_name")),
    )
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("site", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["site"], ["sites.name"], name=op.f("fk_datasets_site_sites")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_datasets_task_id_tasks")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_datasets")),
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_datasets_kind_site_state"), ["kind", "site", "state"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_datasets_task_id"), ["task_id"], unique=False)

    op.create_table(
        "replicas",
        sa.Column("file_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name=op.f("fk_replicas_file_id_files")),
        sa.ForeignKeyConstraint(["site"], ["sites.name"], name=op.f("fk_replicas_site_sites")),
        sa.PrimaryKeyConstraint("file_id", "site", name=op.f("pk_replicas")),
    )
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_replicas_site_state"), ["site", "state"], unique=False)

    op.create_table(
        "dataset_contents",
        sa.Column("dataset", sa.String(length=256), nullable=False),
        sa.Column("file_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset"], ["datasets.name"], name=op.f("fk_dataset_contents_dataset_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_dataset_contents_file_id_files")
        ),
        sa.PrimaryKeyConstraint("dataset", "file_id", name=op.f("pk_dataset_contents")),
    )
    with op.batch_alter_table("dataset_contents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_contents_file_id"), ["file_id"], unique=False)

    op.create_table(
        "job_files",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("file_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("dispatch_dataset", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(
            ["dispatch_dataset"],
            ["datasets.name"],
            name=op.f("fk_job_files_dispatch_dataset_datasets"),
        ),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name=op.f("fk_job_files_file_id_files")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_files_job_id_jobs")),
        sa.PrimaryKeyConstraint("job_id", "file_id", name=op.f("pk_job_files")),
    )
    with op.batch_alter_table("job_files", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_job_files_dispatch_dataset"), ["dispatch_dataset"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_job_files_file_id"), ["file_id"], unique=False)

    op.create_table(
        "subscriptions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("dataset", sa.String(length=256), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("files_total", sa.Integer(), nullable=False),
        sa.Column("files_done", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset"], ["datasets.name"], name=op.f("fk_subscriptions_dataset_datasets")
        ),
        sa.ForeignKeyConstraint(["site"], ["sites.name"], name=op.f("fk_subscriptions_site_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint("dataset", "site", name=op.f("uq_subscriptions_dataset_site")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subscriptions_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriptions_state"))

    op.drop_table("subscriptions")
    with op.batch_alter_table("job_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_files_file_id"))
        batch_op.drop_index(batch_op.f("ix_job_files_dispatch_dataset"))

    op.drop_table("job_files")
    with op.batch_alter_table("dataset_contents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_contents_file_id"))

    op.drop_table("dataset_contents")
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_replicas_site_state"))

    op.drop_table("replicas")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_task_id"))
        batch_op.drop_index(batch_op.f("ix_datasets_kind_site_state"))

    op.drop_table("datasets")
    op.drop_table("files")
