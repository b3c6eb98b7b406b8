"""What the sender of a message (its validated ``user_id``) may ask of the broker.

A pilot's user is bound to its site: it may claim and report on that site's
jobs only. A pilot's own identity (``pilot.<site>:<pilot_id>``) is bound to
its pilot id too: whatever it sends names that pilot id, or is refused, so
no pilot can claim, report on, finish, fail or acknowledge the kill of a
job another pilot of its site holds. A person may kill or retry the jobs they submitted, or anyone's
with the production role. Which user may publish to which exchange at all
is RabbitMQ's to enforce (``broker.security.provisioning``). A refused
message is dead-lettered with the reason, counted and logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import RowMapping

from broker import topology
from broker.messaging.consumer import Incoming
from broker.metrics import REFUSED_SENDERS
from broker.protocol import ClaimRequest
from broker.security import identity
from broker.settings import Settings

T = TypeVar("T")

NO_USER_ID = "the message has no user_id property; every publisher must set it to its user"


def user_required(incoming: Incoming[Any]) -> str | None:
    """Why a submission is refused when it has no sender: every job has an owner."""
    return NO_USER_ID if incoming.user_id is None else None


def allowed(
    batch: Iterable[Incoming[T]], kind: str, why_not: Callable[[Incoming[T]], str | None]
) -> list[Incoming[T]]:
    """The messages of ``batch`` whose sender may send them; the others are refused."""
    return [i for i in batch if check(i, kind, why_not(i))]


def check(incoming: Incoming[Any], kind: str, why: str | None) -> bool:
    """True if ``why`` is None; else refuse the message for that reason and count it."""
    if why is None:
        return True
    incoming.refuse(why, "not_allowed")
    REFUSED_SENDERS.labels(kind=kind).inc()
    return False


def site_refusal(user_id: str | None, doing: str, site: str | None) -> str | None:
    """Why ``user_id`` may not do something to a job of ``site``; None if it may."""
    if user_id is None:
        return NO_USER_ID
    bound = identity.site_of(user_id)
    if bound is not None and bound != site:
        return f"{user_id} may {doing} jobs of site {bound} only; this job is at site {site}"
    return None


def pilot_refusal(user_id: str | None, doing: str, pilot_id: str) -> str | None:
    """Why ``user_id`` may not ``doing`` as pilot ``pilot_id``; None if it may.

    A site's shared identity (``pilot.<site>``) and the identities of services and
    people name no pilot: the pilot id they write is taken as it is.
    """
    if user_id is None:
        return NO_USER_ID
    own = identity.pilot_of(user_id)
    if own is not None and own != pilot_id:
        return f"{user_id} is pilot {own} and may not {doing} as pilot {pilot_id}"
    return None


def claim_refusal(incoming: Incoming[ClaimRequest], rows: dict[str, RowMapping]) -> str | None:
    """Why a claim's sender may not make it: another site's job, another pilot's name,
    or (from a pilot's own identity) an answer asked for another pilot."""
    claim = incoming.message
    why = job_site_refusal(incoming, "claim", rows) or pilot_refusal(
        incoming.user_id, "claim", claim.pilot_id
    )
    user = incoming.user_id or ""
    pilot_id, site = identity.pilot_of(user), identity.site_of(user)
    if why is None and pilot_id is not None and site is not None:
        own = topology.pilot_address(site, pilot_id)
        if claim.reply_to != own:
            why = f"{user} may have claim answers sent to {own} only, not {claim.reply_to}"
    return why


def holder_refusal(pilot_id: str, row: RowMapping) -> str | None:
    """Why an event naming ``pilot_id`` about ``row``'s current attempt may not be
    taken: that pilot does not hold the attempt."""
    if pilot_id != row["pilot_id"]:
        return f"pilot {pilot_id!r} did not claim job {row['id']!r}"
    return None


def job_site_refusal(
    incoming: Incoming[Any], doing: str, rows: dict[str, RowMapping]
) -> str | None:
    """``site_refusal`` for the job the message names (unknown jobs are left to the handler)."""
    row = rows.get(incoming.message.job_id)
    return None if row is None else site_refusal(incoming.user_id, doing, row["site"])


def manage_refusal(
    settings: Settings, user_id: str | None, command: str, rows: Iterable[RowMapping]
) -> str | None:
    """Why ``user_id`` may not ``command`` (kill, retry) these jobs; None if it may."""
    if user_id is None:
        return NO_USER_ID
    for row in rows:
        why = identity.may_manage(settings, user_id, row["owner"])
        if why is not None:
            return f"{command} of job {row['id']} refused: {why}"
    return None


def api_refusal(user_id: str | None) -> str | None:
    """Why ``user_id`` may not use the submitter's API at all: pilots see nothing of it."""
    if user_id is None:
        return NO_USER_ID
    if identity.site_of(user_id) is not None:
        return f"{user_id} is a pilot's identity; pilots may not use the submitter's API"
    return None


def read_refusal(settings: Settings, user_id: str, owner: str | None, what: str) -> str | None:
    """Why ``user_id`` may not see ``what`` (a job, a task) owned by ``owner``; None if it may."""
    why = identity.may_manage(settings, user_id, owner)
    return None if why is None else f"reading {what} refused: {why}"
