"""Where observers hang on the store: the store calls these points, never metrics code.

Three points of change, each called inside the caller's transaction:
``transitions_applied`` (a batch of job transitions applied, once per batch),
``jobs_stored`` (new jobs written in the state their first moves left them in,
with the site each got) and ``transition_refused`` (an illegal transition,
refused). A service registers its observers once at start
(``broker.observability.pipeline.install``); a store with none registered
simply has no one to tell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection

if TYPE_CHECKING:
    from broker.store.transitions import Change

TransitionsApplied = Callable[[Connection, "Sequence[Change]", datetime], None]
JobsStored = Callable[["Iterable[tuple[str | None, Change]]"], None]
TransitionRefused = Callable[["Change"], None]


@dataclass
class Hooks:
    """The observers registered at each point, called in the order they were registered."""

    transitions_applied: list[TransitionsApplied] = field(default_factory=list)
    jobs_stored: list[JobsStored] = field(default_factory=list)
    transition_refused: list[TransitionRefused] = field(default_factory=list)


#: The process's observers (one set: every engine of the process is observed alike).
HOOKS = Hooks()


def register(
    *,
    transitions_applied: TransitionsApplied | None = None,
    jobs_stored: JobsStored | None = None,
    transition_refused: TransitionRefused | None = None,
) -> None:
    """Add observers; one registered already at its point is not added twice."""
    for hooks, hook in (
        (HOOKS.transitions_applied, transitions_applied),
        (HOOKS.jobs_stored, jobs_stored),
        (HOOKS.transition_refused, transition_refused),
    ):
        if hook is not None and hook not in hooks:
            hooks.append(hook)  # type: ignore[arg-type]


def clear() -> None:
    """Remove every observer (tests)."""
    HOOKS.transitions_applied.clear()
    HOOKS.jobs_stored.clear()
    HOOKS.transition_refused.clear()


def applied(conn: Connection, changes: Sequence[Change], now: datetime) -> None:
    """Tell the observers of ``transitions_applied``."""
    for hook in HOOKS.transitions_applied:
        hook(conn, changes, now)


def stored(moves: Sequence[tuple[str | None, Change]]) -> None:
    """Tell the observers of ``jobs_stored``."""
    for hook in HOOKS.jobs_stored:
        hook(moves)


def refused(change: Change) -> None:
    """Tell the observers of ``transition_refused``."""
    for hook in HOOKS.transition_refused:
        hook(change)
