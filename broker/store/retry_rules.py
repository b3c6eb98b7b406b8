"""Operators' retry rules in SQL: apply a file's rules as the whole set, read them back."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from broker.errors import UnknownSite
from broker.retry_rules.defaults import DEFAULT_RULES
from broker.retry_rules.rules import Action, RetryRule, RuleSet
from broker.store.clock import now
from broker.store.schema import retry_rules
from broker.store.sites import known_sites

#: The columns that say what a rule is (all but its name and times).
_RULE_COLUMNS = (
    "position",
    "error_family",
    "error_code",
    "exit_code",
    "diagnostic",
    "site",
    "task_id",
    "action",
    "max_attempts",
    "passive",
)


def operator_rules(conn: Connection) -> list[RetryRule]:
    """The operators' rules, in their file's order."""
    rows = conn.execute(select(retry_rules).order_by(retry_rules.c.position)).mappings()
    return [_rule(r) for r in rows]


def rule_set(conn: Connection) -> RuleSet:
    """The rules in force: the operators', over the defaults."""
    return RuleSet.of(operator_rules(conn), DEFAULT_RULES)


def apply_rules(conn: Connection, rules: Sequence[RetryRule]) -> dict[str, str]:
    """Make the operators' rules those of ``rules`` (a whole file, checked): each rule
    ``added``, ``changed``, ``unchanged`` or ``removed``. Applying the same file twice
    changes nothing."""
    _known_sites(conn, rules)
    before = {r["name"]: r for r in conn.execute(select(retry_rules)).mappings()}
    outcome: dict[str, str] = {}
    t = now()
    for position, rule in enumerate(rules):
        values = _columns(rule, position)
        row = before.get(rule.name)
        if row is None:
            conn.execute(
                insert(retry_rules).values(name=rule.name, created_at=t, modified_at=t, **values)
            )
            outcome[rule.name] = "added"
        elif any(row[k] != v for k, v in values.items()):
            conn.execute(
                update(retry_rules)
                .where(retry_rules.c.name == rule.name)
                .values(modified_at=t, **values)
            )
            outcome[rule.name] = "changed"
        else:
            outcome[rule.name] = "unchanged"
    gone = sorted(set(before) - {r.name for r in rules})
    if gone:
        conn.execute(delete(retry_rules).where(retry_rules.c.name.in_(gone)))
    return outcome | {name: "removed" for name in gone}


def listing(conn: Connection) -> list[dict[str, Any]]:
    """Every rule in force and every default, in the order they are tried; each with
    its ``source`` and, for a default an operator's rule replaces, ``overridden_by``."""
    rules = rule_set(conn)
    shown = [{**_public(r), "overridden_by": None} for r in rules.rules]
    for d in DEFAULT_RULES:
        if d.name in rules.overridden:
            shown.append({**_public(d), "overridden_by": rules.overridden[d.name]})
    return shown


def _known_sites(conn: Connection, rules: Sequence[RetryRule]) -> None:
    named = {r.site: r.name for r in rules if r.site is not None}
    known = known_sites(conn, named)
    for site, name in named.items():
        if site not in known:
            raise UnknownSite(
                f"retry rule {name}: no site {site!r} in the site catalogue (see `pandamq sites`)"
            )


def _columns(rule: RetryRule, position: int) -> dict[str, Any]:
    values = {k: getattr(rule, k) for k in _RULE_COLUMNS if k != "position"}
    return {**values, "position": position, "action": rule.action.value}


def _rule(row: RowMapping) -> RetryRule:
    fields = {k: row[k] for k in _RULE_COLUMNS if k not in ("position", "action")}
    return RetryRule(name=row["name"], action=Action(row["action"]), **fields)


def _public(rule: RetryRule) -> dict[str, Any]:
    shown = dataclasses.asdict(rule)
    shown["action"] = rule.action.value
    shown["matches"] = rule.describe()
    return shown
