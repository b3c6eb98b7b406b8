"""the submitter's API: task owners and endings, job pages by owner, live jobs of a task

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "state NOT IN ('cancelled', 'closed', 'failed', 'finished')"


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_tasks_owner_created_at", ["owner", "created_at"])
    op.create_index("ix_jobs_owner_created_at_id", "jobs", ["owner", "created_at", "id"])
    op.create_index("ix_jobs_created_at_id", "jobs", ["created_at", "id"])
    op.create_index(
        "ix_jobs_task_id_live",
        "jobs",
        ["task_id"],
        postgresql_where=sa.text(LIVE),
        sqlite_where=sa.text(LIVE),
    )
    _store_task_ends()


def _store_task_ends() -> None:
    """Tasks all of whose jobs are final had been left 'running' in the table: store
    their status (the owner of a task is that of its jobs)."""
    conn = op.get_bind()
    conn.execute(
        sa.text(
            "UPDATE tasks SET owner = (SELECT MIN(owner) FROM jobs WHERE jobs.task_id = tasks.id)"
        )
    )
    counts = conn.execute(
        sa.text(
            "SELECT task_id, state, COUNT(*) FROM jobs WHERE task_id IN "
            "(SELECT id FROM tasks WHERE status = 'running') GROUP BY task_id, state"
        )
    ).all()
    by_task: dict[str, dict[str, int]] = {}
    for task_id, state, n in counts:
        by_task.setdefault(task_id, {})[state] = n
    final = {"finished", "failed", "cancelled", "closed"}
    for task_id, states in by_task.items():
        if all(s in final for s in states):
            finished = states.get("finished", 0)
            status = (
                "done" if finished == sum(states.values()) else "finished" if finished else "failed"
            )
            conn.execute(
                sa.text("UPDATE tasks SET status = :s WHERE id = :t"), {"s": status, "t": task_id}
            )


def downgrade() -> None:
    op.drop_index("ix_jobs_task_id_live", table_name="jobs")
    op.drop_index("ix_jobs_created_at_id", table_name="jobs")
    op.drop_index("ix_jobs_owner_created_at_id", table_name="jobs")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_owner_created_at")
        batch_op.drop_column("ended_at")
        batch_op.drop_column("owner")
