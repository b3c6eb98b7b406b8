"""Pilots that die without running a job: counted per site; a site where most do is flagged."""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from broker.factory.pilots import recent_failures
from broker.metrics import SITE_FAILING

log = logging.getLogger(__name__)

#: Ended pilots a site needs before it can be flagged, so one early failure does not flag it.
MIN_ENDED = 5


class SiteHealth:
    """Flags a site when more than a fraction of its last pilots died; says when it recovers."""

    def __init__(self, window: int, fraction: float) -> None:
        self._window = window
        self._fraction = fraction
        self.failing: set[str] = set()

    def check(self, conn: Connection, site: str) -> bool:
        """Whether ``site`` is failing now; logs when that changes."""
        ended, died = recent_failures(conn, site, self._window)
        failing = ended >= min(MIN_ENDED, self._window) and died > self._fraction * ended
        if failing and site not in self.failing:
            log.warning(
                "site %s is failing: %d of its last %d pilots died without running a job",
                site,
                died,
                ended,
            )
            self.failing.add(site)
        elif not failing and site in self.failing:
            log.info("site %s is no longer failing: %d of %d pilots died", site, died, ended)
            self.failing.discard(site)
        SITE_FAILING.labels(site=site).set(int(failing))
        return failing
