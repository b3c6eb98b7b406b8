"""Retry rules and how a failure is matched against them.

A rule names what it matches (an error family and code, a payload exit code,
a regular expression on the diagnostic, a site, a task; each optional, absent
meaning any) and an action. Of the rules that match a failure, the most
specific active one decides (``RuleSet.ruling``); passive ones are only counted
and logged. Specificity: more fields named wins; at equal count a rule naming a
task beats one naming a site, then an error code, an exit code, a diagnostic, a
family; at equal rank an operator's rule beats a default, then the earlier in
its file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Action(StrEnum):
    """What a rule does with a failed attempt (PanDA's retry module's actions)."""

    NO_RETRY = "no_retry"
    LIMIT_RETRY = "limit_retry"
    INCREASE_MEMORY = "increase_memory"
    INCREASE_WALLTIME = "increase_walltime"
    RETRY_ELSEWHERE = "retry_elsewhere"


#: The fields a rule matches on, most significant first (the tie-break order).
MATCH_FIELDS = ("task_id", "site", "error_code", "exit_code", "diagnostic", "error_family")


@dataclass(frozen=True)
class Failed:
    """A failed attempt as rules see it."""

    error_family: str | None
    error_code: int | None
    exit_code: int | None = None
    diagnostic: str | None = None
    site: str | None = None
    task_id: str | None = None


@dataclass(frozen=True)
class RetryRule:
    """One rule: what it matches (``None``: anything) and what it does."""

    name: str
    action: Action
    error_family: str | None = None
    error_code: int | None = None
    exit_code: int | None = None
    diagnostic: str | None = None
    site: str | None = None
    task_id: str | None = None
    #: With ``limit_retry``: attempts a job failing this way may have at most.
    max_attempts: int | None = None
    passive: bool = False
    #: ``operator`` (applied from a file) or ``default`` (built in).
    source: str = "operator"

    def key(self) -> tuple[object, ...]:
        """What it matches: two rules with the same key match the same failures."""
        return tuple(getattr(self, f) for f in MATCH_FIELDS)

    def rank(self) -> tuple[int, ...]:
        """Its specificity, higher first: fields named, then which (``MATCH_FIELDS``)."""
        named = [getattr(self, f) is not None for f in MATCH_FIELDS]
        return (sum(named), *map(int, named), int(self.source == "operator"))

    def doing(self) -> str:
        """Its action, with the number of ``limit_retry``: ``limit_retry 2``."""
        n = f" {self.max_attempts}" if self.max_attempts is not None else ""
        return f"{self.action.value}{n}"

    def says(self) -> str:
        """``rule NAME (limit_retry 2)``, as decisions name it."""
        return f"rule {self.name} ({self.doing()})"

    def describe(self) -> str:
        """What it matches, in a few words: ``pilot 1305, exit code 3, site X``."""
        parts = []
        if self.error_family is not None:
            code = f" {self.error_code}" if self.error_code is not None else ""
            parts.append(f"{self.error_family}{code}")
        for value, label in ((self.exit_code, "exit code"), (self.site, "site")):
            if value is not None:
                parts.append(f"{label} {value}")
        if self.task_id is not None:
            parts.append(f"task {self.task_id}")
        if self.diagnostic is not None:
            parts.append(f"diagnostic /{self.diagnostic}/")
        return ", ".join(parts) or "any failure"

    def matches(self, failed: Failed, pattern: re.Pattern[str] | None = None) -> bool:
        """True when every field it names is what ``failed`` has."""
        for name in ("task_id", "site", "error_code", "exit_code", "error_family"):
            wanted = getattr(self, name)
            if wanted is not None and wanted != getattr(failed, name):
                return False
        if self.diagnostic is None:
            return True
        compiled = pattern or re.compile(self.diagnostic)
        return compiled.search(failed.diagnostic or "") is not None


@dataclass(frozen=True)
class Ruling:
    """The rule that decides a failure (``None``: no rule matches), and the passive
    rules that would have decided it had they been active."""

    rule: RetryRule | None
    passive: tuple[RetryRule, ...] = ()


#: The ruling when no rule matches.
NO_RULE = Ruling(None)


@dataclass(frozen=True)
class RuleSet:
    """The rules in force: operators' rules, and the defaults none of them overrides."""

    rules: tuple[RetryRule, ...]
    #: Defaults replaced by an active operator rule with the same key: default → operator's.
    overridden: dict[str, str] = field(default_factory=dict)
    #: Each rule's diagnostic expression, compiled once.
    patterns: dict[str, re.Pattern[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, operators: Sequence[RetryRule], defaults: Iterable[RetryRule]) -> RuleSet:
        """Operators' rules over the defaults: an active operator rule with a default's
        key replaces that default."""
        active = {r.key(): r.name for r in operators if not r.passive}
        kept, overridden = [], {}
        for d in defaults:
            if d.key() in active:
                overridden[d.name] = active[d.key()]
            else:
                kept.append(d)
        # Stable: at equal rank, the earlier in its file first.
        ordered = sorted([*operators, *kept], key=lambda r: r.rank(), reverse=True)
        patterns = {r.name: re.compile(r.diagnostic) for r in ordered if r.diagnostic}
        return cls(tuple(ordered), overridden, patterns)

    def ruling(self, failed: Failed) -> Ruling:
        """The most specific active rule matching ``failed``, and the passive ones above it."""
        passive: list[RetryRule] = []
        for rule in self.rules:
            if not rule.matches(failed, self.patterns.get(rule.name)):
                continue
            if not rule.passive:
                return Ruling(rule, tuple(passive))
            passive.append(rule)
        return Ruling(None, tuple(passive))
