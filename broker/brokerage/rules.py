"""PanDA's brokerage rules: filter the sites a job cannot use, weigh the others.

Pure functions over the catalogue, each site's load and where the job's
input data is; the broker service gathers those from SQL. Every skipped
site gets a reason in words, so that ``pandamq job ID`` can say why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.brokerage.catalogue import SiteConfig
from broker.brokerage.exclusion import Probation
from broker.protocol import JobSpec

#: Statuses a site may have and still take a job that names it (PanDA: pre-assigned).
PINNED_ONLY = frozenset({"brokeroff", "test"})


@dataclass(frozen=True)
class Needs:
    """What brokerage asks of a site for one job."""

    cores: int = 1
    memory_mb: int = 2000
    walltime_s: int = 86400
    release: str | None = None
    site: str | None = None
    sites: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: JobSpec) -> Needs:
        """The needs of a job spec."""
        return cls(
            spec.cores, spec.memory_mb, spec.walltime_s, spec.release, spec.site, tuple(spec.sites)
        )

    def candidates(self, catalogue: Mapping[str, SiteConfig]) -> list[SiteConfig]:
        """The sites considered at all: the one named, those allowed, or every site."""
        names = [self.site] if self.site else list(self.sites) or sorted(catalogue)
        return [catalogue[n] for n in names if n in catalogue]


@dataclass
class Load:
    """A site's jobs: queued (not yet claimed) and running (claimed by a pilot)."""

    queued: int = 0
    running: int = 0


def skip_reason(
    needs: Needs, site: SiteConfig, load: Load, probation: Probation | None = None
) -> str | None:
    """Why ``site`` cannot take the job, or None if it can. A site in ``test`` on
    ``probation`` passes the status rule: whether it takes one more probe job is a
    reason of its own (``left_out``)."""
    on_probation = probation is not None and site.status == "test"
    for rule in (_release, _walltime, _slot, _queue_full) if on_probation else _RULES:
        reason = rule(needs, site, load)
        if reason is not None:
            return reason
    return None


def left_out(
    needs: Needs, site: SiteConfig, load: Load, probation: Probation | None, excluded: str | None
) -> str | None:
    """Why a site that passes every rule is left out for a while: it is on probation
    and has its probe jobs, or the job's task fails there (``excluded``). A job that
    names the site is never left out."""
    if needs.site == site.name:
        return None
    if probation is not None and site.status == "test":
        refusal = probation.refusal(load.queued + load.running)
        if refusal is not None:
            return refusal
    return excluded


def _status(needs: Needs, site: SiteConfig, load: Load) -> str | None:
    if site.status == "online" or (site.status in PINNED_ONLY and needs.site == site.name):
        return None
    if site.status in PINNED_ONLY:
        return f"status {site.status}: takes only jobs that name it"
    return f"status {site.status}"


def _release(needs: Needs, site: SiteConfig, load: Load) -> str | None:
    if needs.release is None or needs.release in site.releases:
        return None
    provided = ", ".join(site.releases) or "none"
    return f"release {needs.release} not installed (provides: {provided})"


def _walltime(needs: Needs, site: SiteConfig, load: Load) -> str | None:
    if site.max_walltime_s is None or needs.walltime_s <= site.max_walltime_s:
        return None
    return f"walltime {needs.walltime_s} s above the site's maximum of {site.max_walltime_s} s"


def _slot(needs: Needs, site: SiteConfig, load: Load) -> str | None:
    if site.slots is None:
        return None
    wide = [s for s in site.slots if s.cores >= needs.cores]
    if not wide:
        most = max(s.cores for s in site.slots)
        return f"cores: needs {needs.cores}, the largest slot has {most}"
    if any(s.fits(needs.cores, needs.memory_mb) for s in wide):
        return None
    best = max(wide, key=lambda s: s.memory_mb)
    return f"memory: needs {needs.memory_mb} MB, the largest slot that fits has {best.describe()}"


def _queue_full(needs: Needs, site: SiteConfig, load: Load) -> str | None:
    if site.max_queued is None or load.queued < site.max_queued:
        return None
    return f"queue full: {load.queued} jobs queued, the site's cap is {site.max_queued}"


_RULES = (_status, _release, _walltime, _slot, _queue_full)


def weight(load: Load, data_fraction: float, data_weight: float) -> float:
    """PanDA's weight: (running + 1) / (queued + 10), times a bonus for input data at the site."""
    return (load.running + 1) / (load.queued + 10) * (1 + data_weight * data_fraction)


@dataclass(frozen=True)
class Decision:
    """Where a job goes (``site`` None: nowhere), why, and why not elsewhere."""

    site: str | None
    why: str
    weights: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What is stored on the job and shown by ``pandamq job ID``."""
        return {
            "site": self.site,
            "why": self.why,
            "weights": self.weights,
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class LeftOut:
    """Sites left out for a while (docs/brokerage.md, "Failing sites left out"):
    the sites in ``test`` on probation, and the reason each site is left out for
    the job's task."""

    probation: Mapping[str, Probation] = field(default_factory=dict)
    excluded: Mapping[str, str] = field(default_factory=dict)


def choose(
    needs: Needs,
    sites: Iterable[SiteConfig],
    loads: Mapping[str, Load],
    data: Mapping[str, float],
    data_weight: float,
    left: LeftOut | None = None,
    refused: Mapping[str, str] | None = None,
) -> Decision:
    """The site of highest weight among those that pass every filter and are not left
    out (ties by name); when only sites left out remain, the best of them, saying so.
    ``refused`` names sites the job may not go to at all, and why (a user's cap)."""
    left = left or LeftOut()
    refused = refused or {}
    weights: dict[str, float] = {}
    skipped: dict[str, str] = {}
    spare: dict[str, float] = {}
    for site in sites:
        load = loads.get(site.name, Load())
        probation = left.probation.get(site.name)
        reason = refused.get(site.name) or skip_reason(needs, site, load, probation)
        w = round(weight(load, data.get(site.name, 0.0), data_weight), 4)
        if reason is None:
            reason = left_out(needs, site, load, probation, left.excluded.get(site.name))
            if reason is not None:
                spare[site.name] = w
        if reason is None:
            weights[site.name] = w
        else:
            skipped[site.name] = reason
    if not weights and spare:
        return _despite(spare, skipped)
    if not weights:
        return Decision(None, _nowhere(needs, skipped), weights, skipped)
    best = min(weights, key=lambda name: (-weights[name], name))
    why = _why(best, weights, loads, data)
    if best in left.probation:
        why += "; a probe job of a site in test"
    return Decision(best, why, weights, skipped)


def _despite(spare: dict[str, float], skipped: dict[str, str]) -> Decision:
    """A job that only sites left out for a while could take goes to the best of them
    rather than failing: being left out steers jobs elsewhere, it refuses none."""
    best = min(spare, key=lambda name: (-spare[name], name))
    why = (
        f"site {best} although left out ({skipped[best]}): no other site fits;"
        f" the highest weight {spare[best]} of {len(spare)} site(s) left out"
    )
    return Decision(best, why, dict(spare), {n: r for n, r in skipped.items() if n != best})


def _why(
    best: str, weights: dict[str, float], loads: Mapping[str, Load], data: Mapping[str, float]
) -> str:
    load = loads.get(best, Load())
    others = len(weights) - 1
    text = (
        f"site {best} has the highest weight {weights[best]} of {others + 1} candidate(s)"
        f" ({load.queued} queued, {load.running} running"
    )
    if data.get(best):
        text += f", {data[best]:.0%} of the input data there"
    return text + ")"


def _nowhere(needs: Needs, skipped: dict[str, str]) -> str:
    if not skipped:
        wanted = needs.site or ", ".join(needs.sites) or "any"
        return f"no site to consider (asked for: {wanted}; not in the site catalogue)"
    reasons = "; ".join(f"{name}: {why}" for name, why in sorted(skipped.items()))
    return f"no site fits the job: {reasons}"
