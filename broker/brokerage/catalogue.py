"""The site catalogue as people write it: ``sites.toml``, parsed and checked.

Each ``[sites.NAME]`` table describes one site (PanDA's queue): its status,
its storage element, the slots it offers (resource types with their cores
and memory), its maximum walltime, the software releases it provides and a
cap on the jobs queued for it. See docs/brokerage.md for the format.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.errors import BadInput
from broker.protocol import NAME_PATTERN
from broker.topology import resource_type

SITE_STATUSES = ("online", "offline", "brokeroff", "test")

_SITE_KEYS = {"status", "se", "slots", "max_walltime_s", "releases", "max_queued"}
_SLOT_KEYS = {"resource_type", "cores", "memory_mb"}


@dataclass(frozen=True)
class ResourceSlot:
    """One kind of batch slot a site offers (PanDA's resource type)."""

    resource_type: str
    cores: int
    memory_mb: int

    def fits(self, cores: int, memory_mb: int) -> bool:
        """True when a job of this shape can run in this slot."""
        return cores <= self.cores and memory_mb <= self.memory_mb

    def describe(self) -> str:
        """``MCORE (8 cores, 16000 MB)``."""
        return f"{self.resource_type} ({self.cores} cores, {self.memory_mb} MB)"


@dataclass(frozen=True)
class SiteConfig:
    """A site as the catalogue describes it; ``None`` means "no limit declared"."""

    name: str
    status: str = "online"
    se: str | None = None
    slots: tuple[ResourceSlot, ...] | None = None
    max_walltime_s: int | None = None
    releases: tuple[str, ...] = field(default_factory=tuple)
    max_queued: int | None = None

    def columns(self) -> dict[str, Any]:
        """The SQL column values of this site."""
        return {
            "status": self.status,
            "se": self.se,
            "slots": None if self.slots is None else [vars(s) for s in self.slots],
            "max_walltime_s": self.max_walltime_s,
            "releases": list(self.releases),
            "max_queued": self.max_queued,
        }

    @classmethod
    def from_row(cls, row: Any) -> SiteConfig:
        """A site from its SQL row."""
        slots = row["slots"]
        return cls(
            name=row["name"],
            status=row["status"],
            se=row["se"],
            slots=None if slots is None else tuple(ResourceSlot(**s) for s in slots),
            max_walltime_s=row["max_walltime_s"],
            releases=tuple(row["releases"] or ()),
            max_queued=row["max_queued"],
        )


def read_catalogue(path: Path) -> list[SiteConfig]:
    """Every site in a ``sites.toml`` file; ``BadInput`` names the first problem."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise BadInput(f"cannot read site catalogue {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"site catalogue {path} is not valid TOML: {exc}") from exc
    return parse_catalogue(data, str(path))


def parse_catalogue(data: dict[str, Any], source: str) -> list[SiteConfig]:
    """Sites from the parsed TOML document."""
    unknown = sorted(set(data) - {"sites"})
    if unknown:
        raise BadInput(f"{source}: unknown table(s) {', '.join(unknown)}; expected [sites.NAME]")
    sites = data.get("sites")
    if not isinstance(sites, dict) or not sites:
        raise BadInput(f"{source}: no site; expected at least one [sites.NAME] table")
    return [_site(name, body, f"{source}: site {name!r}") for name, body in sites.items()]


def _site(name: str, body: Any, where: str) -> SiteConfig:
    if not NAME_PATTERN.match(name):
        raise BadInput(f"{where}: a site name must be 1-64 letters, digits, '_', '.' or '-'")
    if not isinstance(body, dict):
        raise BadInput(f"{where}: expected a table")
    _no_unknown(body, _SITE_KEYS, where)
    status = body.get("status", "online")
    if status not in SITE_STATUSES:
        raise BadInput(f"{where}: status must be one of {', '.join(SITE_STATUSES)}")
    slots = body.get("slots")
    return SiteConfig(
        name=name,
        status=status,
        se=_optional(body, "se", str, where),
        slots=None if slots is None else _slots(slots, where),
        max_walltime_s=_positive(body, "max_walltime_s", where),
        releases=tuple(_strings(body.get("releases", []), where)),
        max_queued=_positive(body, "max_queued", where),
    )


def _slots(value: Any, where: str) -> tuple[ResourceSlot, ...]:
    if not isinstance(value, list) or not value:
        raise BadInput(f"{where}: slots must be a non-empty array of [[sites.NAME.slots]] tables")
    slots = []
    for n, item in enumerate(value, 1):
        here = f"{where} slot {n}"
        if not isinstance(item, dict):
            raise BadInput(f"{here}: expected a table")
        _no_unknown(item, _SLOT_KEYS, here)
        cores = _positive(item, "cores", here) or 1
        memory = _positive(item, "memory_mb", here)
        if memory is None:
            raise BadInput(f"{here}: memory_mb is required")
        rtype = _optional(item, "resource_type", str, here) or resource_type(cores, memory)
        slots.append(ResourceSlot(rtype, cores, memory))
    return tuple(slots)


def _no_unknown(body: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}")


def _optional(body: dict[str, Any], key: str, kind: type[Any], where: str) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise BadInput(f"{where}: {key} must be a {kind.__name__}")
    return value


def _positive(body: dict[str, Any], key: str, where: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadInput(f"{where}: {key} must be a whole number of at least 1, got {value!r}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{where}: releases must be an array of strings")
    return list(value)
