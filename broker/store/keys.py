"""Rows picked by a list of two-column keys, in a form the database can hash.

PostgreSQL matches ``(a, b) IN ((..), (..), ...)`` by trying every pair of the
list on every candidate row, so a statement over N keys costs N²: 0.19 s for
5,000 jobs here against 0.05 s for a plain ``IN``. Keys are grouped instead by
the column with few values (a job's attempt, a file's scope), and each group
becomes ``b = :v AND a IN (...)``, which PostgreSQL hashes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_


def keys_in(
    listed: ColumnElement[Any],
    grouped: ColumnElement[Any],
    keys: Iterable[tuple[Hashable, Hashable]],
) -> ColumnElement[bool]:
    """``(listed, grouped) IN keys``, one plain ``IN`` list per distinct ``grouped`` value."""
    groups: dict[Hashable, list[Hashable]] = defaultdict(list)
    for a, b in keys:
        groups[b].append(a)
    if not groups:
        return false()
    return or_(*(and_(grouped == b, listed.in_(values)) for b, values in groups.items()))
