"""The retry rules as operators write them: a TOML (or YAML) file, checked as a whole.

Each ``[rules.NAME]`` table is one rule (docs/reliability.md, "Retry rules").
A file with one bad rule is refused whole, with one line naming the rule:
an unknown action or key, an invalid regular expression, ``limit_retry``
without ``max_attempts``, or two rules that contradict each other (the same
match, both active or both passive).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from broker.error_codes import ErrorFamily
from broker.errors import BadInput
from broker.protocol import NAME_PATTERN
from broker.retry_rules.defaults import DEFAULT_NAMES
from broker.retry_rules.rules import Action, RetryRule

_KEYS = {
    "action",
    "max_attempts",
    "passive",
    "error_family",
    "error_code",
    "exit_code",
    "diagnostic",
    "site",
    "task_id",
}
_ACTIONS = ", ".join(a.value for a in Action)
_FAMILIES = ", ".join(f.value for f in ErrorFamily)


def read_rules(path: Path) -> list[RetryRule]:
    """Every rule of a retry rule file (TOML, or YAML for ``.yaml``/``.yml``), in file
    order; ``BadInput`` names the first problem."""
    yaml_file = path.suffix in (".yaml", ".yml")
    try:
        text = path.read_text()
        data = _yaml(text) if yaml_file else tomllib.loads(text)
    except OSError as exc:
        raise BadInput(f"cannot read retry rule file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        kind = "YAML" if yaml_file else "TOML"
        raise BadInput(f"retry rule file {path} is not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping with rules, [rules.NAME] tables")
    return parse_rules(data, str(path))


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice (a rule named twice would be lost)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping; ``yaml.YAMLError`` if a key repeats."""
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {repeated[0]!r} given twice", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def _yaml(text: str) -> Any:
    # _UniqueKeys is a SafeLoader: no arbitrary objects.
    return yaml.load(text, Loader=_UniqueKeys)


def parse_rules(data: dict[str, Any], source: str) -> list[RetryRule]:
    """The rules of a parsed TOML document, checked one by one and against each other.

    A document without ``[rules]`` has no rule: only the defaults apply then.
    """
    unknown = sorted(set(data) - {"rules"})
    if unknown:
        raise BadInput(f"{source}: unknown table(s) {', '.join(unknown)}; expected [rules.NAME]")
    tables = data.get("rules", {})
    if not isinstance(tables, dict):
        raise BadInput(f"{source}: rules must be tables, [rules.NAME]")
    rules = [_rule(name, body, f"{source}: rule {name}") for name, body in tables.items()]
    _no_contradiction(rules, source)
    return rules


def _rule(name: str, body: Any, where: str) -> RetryRule:
    if not NAME_PATTERN.match(name):
        raise BadInput(f"{where}: a rule name must be 1-64 letters, digits, '_', '.' or '-'")
    if name in DEFAULT_NAMES:
        raise BadInput(f"{where}: the name is a default rule's; match it to replace it")
    if not isinstance(body, dict):
        raise BadInput(f"{where}: expected a table")
    extra = sorted(set(body) - _KEYS)
    if extra:
        raise BadInput(f"{where}: unknown key(s) {', '.join(extra)}")
    action = _action(body.get("action"), where)
    family = _family(body.get("error_family"), where)
    code = _integer(body, "error_code", where)
    if code is not None and family is None:
        raise BadInput(f"{where}: error_code needs error_family (codes repeat across families)")
    return RetryRule(
        name=name,
        action=action,
        error_family=family,
        error_code=code,
        exit_code=_integer(body, "exit_code", where),
        diagnostic=_pattern(body.get("diagnostic"), where),
        site=_text(body, "site", where),
        task_id=_text(body, "task_id", where),
        max_attempts=_limit(action, body.get("max_attempts"), where),
        passive=_flag(body.get("passive", False), where),
    )


def _action(value: Any, where: str) -> Action:
    if value is None:
        raise BadInput(f"{where}: no action; expected one of {_ACTIONS}")
    try:
        return Action(value)
    except ValueError:
        raise BadInput(f"{where}: unknown action {value!r}; expected one of {_ACTIONS}") from None


def _family(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if value not in {f.value for f in ErrorFamily}:
        raise BadInput(f"{where}: unknown error_family {value!r}; expected one of {_FAMILIES}")
    return str(value)


def _integer(body: dict[str, Any], key: str, where: str) -> int | None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadInput(f"{where}: {key} must be an integer, got {value!r}")
    return value


def _text(body: dict[str, Any], key: str, where: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or not NAME_PATTERN.match(value)):
        raise BadInput(f"{where}: {key} must be a name (letters, digits, '_', '.', '-')")
    return value


def _pattern(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"{where}: diagnostic must be a regular expression in a string")
    try:
        re.compile(value)
    except re.error as exc:
        raise BadInput(
            f"{where}: diagnostic {value!r} is not a valid regular expression: {exc}"
        ) from exc
    return value


def _limit(action: Action, value: Any, where: str) -> int | None:
    if action != Action.LIMIT_RETRY:
        if value is not None:
            raise BadInput(f"{where}: max_attempts goes with limit_retry only, not {action.value}")
        return None
    if value is None:
        raise BadInput(f"{where}: limit_retry needs max_attempts, the attempts a job may have")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{where}: max_attempts must be an integer of at least 1, got {value!r}")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise BadInput(f"{where}: passive must be true or false, got {value!r}")
    return value


def _no_contradiction(rules: list[RetryRule], source: str) -> None:
    """Two active (or two passive) rules with the same match leave the action undecided."""
    seen: dict[tuple[object, ...], RetryRule] = {}
    for rule in rules:
        key = (*rule.key(), rule.passive)
        other = seen.setdefault(key, rule)
        if other is not rule:
            what = "repeats" if other.doing() == rule.doing() else "contradicts"
            raise BadInput(
                f"{source}: rule {rule.name} {what} rule {other.name}: both match "
                f"{rule.describe()} ({other.doing()} there, {rule.doing()} here)"
            )
