"""The default rule set: the retry behaviour pandamq has without operators' rules.

Operators' rules are added to these; an active operator rule with the same
match as a default replaces it (docs/reliability.md, "Retry rules"). What no
rule changes is in ``broker.operations.retries``: kills, the job's own
``final_exit_codes`` and its ``max_attempts``.
"""

from __future__ import annotations

from broker.error_codes import DDMError, ErrorFamily, PilotError
from broker.retry_rules.rules import Action, RetryRule

PILOT, DDM = ErrorFamily.PILOT.value, ErrorFamily.DDM.value

DEFAULT_RULES: tuple[RetryRule, ...] = (
    RetryRule(
        "payload-not-started",
        Action.NO_RETRY,
        error_family=PILOT,
        error_code=int(PilotError.PAYLOAD_NOT_STARTED),
        source="default",
    ),
    RetryRule(
        "output-name-taken",
        Action.NO_RETRY,
        error_family=DDM,
        error_code=int(DDMError.OUTPUT_NAME_TAKEN),
        source="default",
    ),
    # Shell exit codes that say the command itself is wrong: retrying cannot help.
    RetryRule("command-not-executable", Action.NO_RETRY, exit_code=126, source="default"),
    RetryRule("command-not-found", Action.NO_RETRY, exit_code=127, source="default"),
    RetryRule(
        "out-of-memory",
        Action.INCREASE_MEMORY,
        error_family=PILOT,
        error_code=int(PilotError.OUT_OF_MEMORY),
        source="default",
    ),
)

#: The names of the defaults: an operator's rule may not take one.
DEFAULT_NAMES = frozenset(r.name for r in DEFAULT_RULES)
