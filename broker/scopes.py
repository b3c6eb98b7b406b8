"""The scope of a job's outputs and log, named as Rucio names scopes.

Standard library only: the broker's claim service names the scope in the
grant, and the DDM bridge checks the files a pilot reports against it.
"""

from __future__ import annotations

import hashlib
import re

#: The scope of the outputs of a job with no validated owner.
USER_SCOPE = "user"
#: Longest scope name (the protocol's name rule).
MAX_SCOPE = 64
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def output_scope(owner: str | None) -> str:
    """The scope of a job's outputs and log, of a task or not: its owner's, as a user's
    outputs are in Rucio, so that a Rucio needs one scope per user and none per task.
    The names stay unique in it: a task's outputs are named after its output dataset,
    which is new for each task, and a log after its job and attempt."""
    return owner_scope(owner)


def owner_scope(owner: str | None) -> str:
    """The scope of an owner's outputs, as Rucio names users' scopes: ``user.<name>``.

    ``owner`` is the validated identity (``user.alice`` gives ``user.alice``,
    ``guest`` gives ``user.guest``). A name the scope rule does not allow is
    mended and given a hash of the owner, so two owners never share a scope.
    """
    if not owner:
        return USER_SCOPE
    name = owner.removeprefix(f"{USER_SCOPE}.")
    mended = _NOT_IN_NAME.sub("_", name)
    scope = f"{USER_SCOPE}.{mended}"
    if mended == name and name and len(scope) <= MAX_SCOPE:
        return scope
    digest = hashlib.sha256(owner.encode()).hexdigest()[:8]
    return f"{USER_SCOPE}.{mended[: MAX_SCOPE - len(USER_SCOPE) - 10]}.{digest}"
