"""Users' caps on their activated and running jobs: beyond them, a user's jobs stay
``throttled`` until the user's earlier jobs end.

``user_max_running`` caps a user's activated and running jobs in total,
``user_max_running_per_site`` at each site (0: no cap), and ``user_caps``
sets either, or ``max_queued``, for one user. Throttling
(``broker.operations.throttle``) asks this module, as it activates or releases
jobs, which users are at a cap; each user's jobs are counted once per
transaction, from the index on (state, owner, priority), and as jobs are activated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, RowMapping

from broker.settings import Settings
from broker.store.users import ahead_at, queued_at, user_use

#: A job as throttling reads it (``broker.operations.throttle.Row``).
Row = RowMapping | Mapping[str, Any]


@dataclass(frozen=True)
class Caps:
    """Every user's caps (0: none), and the users whose own differ (``user_caps``)."""

    max_queued: int = 0
    max_running: int = 0
    max_running_per_site: int = 0
    overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    max_queued_per_site: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Caps:
        """The caps a deployment is configured with."""
        return cls(
            settings.user_max_queued,
            settings.user_max_running,
            settings.user_max_running_per_site,
            settings.user_cap_overrides(),
            settings.user_max_queued_per_site,
        )

    def of_user(self, owner: str, cap: str) -> tuple[int, str]:
        """``owner``'s ``cap`` (``max_queued``, ...), and the setting it comes from."""
        own = self.overrides.get(owner, {})
        if cap in own:
            return own[cap], f"user_caps {owner}:{cap}={own[cap]}"
        value: int = getattr(self, cap)
        return value, f"user_{cap} {value}"

    @property
    def running(self) -> bool:
        """Whether some user's activated and running jobs are capped."""
        own = {cap for caps in self.overrides.values() for cap, n in caps.items() if n}
        return bool(
            self.max_running
            or self.max_running_per_site
            or own - {"max_queued", "max_queued_per_site"}
        )


class UserCaps:
    """What users have activated and running, against the caps, within one transaction."""

    def __init__(self, conn: Connection, caps: Caps) -> None:
        self._conn = conn
        self._caps = caps
        self._total: dict[str, int] = {}
        self._at_site: dict[tuple[str, str], int] = {}

    def _count(self, site: str, owners: Iterable[str]) -> None:
        new = {o for o in owners if o not in self._total}
        if new:
            use = user_use(self._conn, new)
            self._total |= {o: use[o].ahead if o in use else 0 for o in new}
        here = {o for o in owners if (site, o) not in self._at_site}
        if here:
            found = ahead_at(self._conn, [site], here)
            self._at_site |= {(site, o): found.get((site, o), 0) for o in here}

    def why_full(self, site: str, owner: str | None) -> str | None:
        """Why ``owner`` may not have one more job activated at ``site``; None if it may."""
        if owner is None:
            return None
        self._count(site, [owner])
        total = self._total[owner]
        cap, rule = self._caps.of_user(owner, "max_running")
        if cap and total >= cap:
            return f"user {owner} at its cap: {total} job(s) activated or running, {rule}"
        here = self._at_site.get((site, owner), 0)
        cap, rule = self._caps.of_user(owner, "max_running_per_site")
        if cap and here >= cap:
            return (
                f"user {owner} at its cap at site {site}: {here} job(s) activated or running, "
                f"{rule}"
            )
        return None

    def full(self, site: str, owners: Iterable[str | None]) -> set[str]:
        """Those of ``owners`` at a cap for ``site``."""
        wanted = {o for o in owners if o is not None}
        self._count(site, wanted)
        return {o for o in wanted if self.why_full(site, o) is not None}

    def admit(
        self, site: str, ordered: Sequence[Row], room: int
    ) -> tuple[list[Row], dict[str, str]]:
        """Of one site's ``ordered`` rows, those whose users are under their caps (the
        first ``room`` of them counted as activated), and why each other one waits."""
        self._count(site, {r["owner"] for r in ordered if r["owner"] is not None})
        allowed: list[Row] = []
        held: dict[str, str] = {}
        for row in ordered:
            why = self.why_full(site, row["owner"])
            if why is not None:
                held[row["id"]] = why
                continue
            if len(allowed) < room and row["owner"] is not None:
                self._total[row["owner"]] += 1
                key = (site, row["owner"])
                self._at_site[key] = self._at_site.get(key, 0) + 1
            allowed.append(row)
        return allowed, held


class QueuedCap:
    """``user_max_queued``: a user's queued jobs (waiting or activated) in total, checked
    as submissions are accepted in one transaction; beyond it a submission is refused."""

    def __init__(self, conn: Connection, caps: Caps) -> None:
        self._conn = conn
        self._caps = caps
        self._queued: dict[str, int] = {}

    def refusal(self, owner: str | None, new: int = 1) -> str | None:
        """Why ``new`` more jobs of ``owner`` are refused; None (and counted) if they are not."""
        if owner is None:
            return None
        cap, rule = self._caps.of_user(owner, "max_queued")
        if not cap:
            return None
        if owner not in self._queued:
            use = user_use(self._conn, [owner])
            self._queued[owner] = use[owner].queued if owner in use else 0
        queued = self._queued[owner]
        if queued + new > cap:
            return (
                f"user {owner} has {queued} queued job(s), {rule}: {new} more refused "
                "(submit again as earlier jobs start)"
            )
        self._queued[owner] = queued + new
        return None


class QueuedPerSiteCap:
    """``user_max_queued_per_site``: brokerage leaves out a site where the job's user has
    that many queued jobs already (waiting or activated), counted once per transaction
    and as brokerage places jobs there."""

    def __init__(self, conn: Connection, caps: Caps) -> None:
        self._conn = conn
        self._caps = caps
        self._queued: dict[tuple[str, str], int] = {}

    def full_sites(self, owner: str | None, sites: Iterable[str]) -> dict[str, str]:
        """Those of ``sites`` where ``owner`` is at its cap, and why."""
        if owner is None:
            return {}
        cap, rule = self._caps.of_user(owner, "max_queued_per_site")
        if not cap:
            return {}
        names = set(sites)
        new = {s for s in names if (s, owner) not in self._queued}
        if new:
            found = queued_at(self._conn, new, [owner])
            self._queued |= {(s, owner): found.get((s, owner), 0) for s in new}
        return {
            s: f"user {owner} has {self._queued[(s, owner)]} queued job(s) here, {rule}"
            for s in sorted(names)
            if self._queued[(s, owner)] >= cap
        }

    def placed(self, owner: str | None, site: str) -> None:
        """Count one more queued job of ``owner`` at ``site``."""
        if owner is not None and (site, owner) in self._queued:
            self._queued[(site, owner)] += 1
