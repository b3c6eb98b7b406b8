"""Retries: a failed attempt with a retryable error becomes a new attempt.

What a failure leads to is decided by the retry rules (``broker.retry_rules``:
the defaults and the operators', docs/reliability.md, "Retry rules"). No rule
changes three things: killed jobs are not retried, nor payload exit codes the
job's spec marks final, nor an attempt that was the job's last
(``max_attempts``; ``limit_retry`` may only lower it), unless a person asks
for the retry. The new attempt keeps the site of the old one, or is brokered
again away from it (``retry_elsewhere``); it waits in ``defined`` for its
backoff (``broker.operations.backoff`` sets it up then) or, with none, goes on at
once through ``assigned → activated``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, RowMapping, bindparam, insert, update

from broker.error_codes import ErrorFamily, PilotError, TaskBufferError
from broker.metrics import RETRY_RULE_MATCHES
from broker.observability.logs import job_context
from broker.operations import backoff
from broker.operations.activation import Placement
from broker.operations.brokerage import Brokerage
from broker.operations.setup import set_up
from broker.operations.throttle import Limits
from broker.protocol import JobSpec
from broker.retry_rules.defaults import DEFAULT_RULES
from broker.retry_rules.rules import NO_RULE, Action, Failed, RetryRule, RuleSet, Ruling
from broker.settings import Settings
from broker.states import JobState
from broker.store.jobs import spec_of
from broker.store.keys import attempts_in
from broker.store.retry_rules import rule_set
from broker.store.schema import job_attempts, job_transitions, jobs
from broker.topology import resource_type

log = logging.getLogger(__name__)

#: Killed jobs: whatever the rules say, a kill is not undone by a retry.
_KILLED = {(ErrorFamily.TASKBUFFER, TaskBufferError.KILLED), (ErrorFamily.PILOT, PilotError.KILLED)}

#: Actions that only limit retries: a retry by hand ignores them.
_LIMITS = (Action.NO_RETRY, Action.LIMIT_RETRY)

#: The rules when no operator has applied any.
DEFAULT_SET = RuleSet.of((), DEFAULT_RULES)


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed."""

    family: str | None
    code: int | None
    exit_code: int | None = None
    diagnostic: str | None = None


@dataclass(frozen=True)
class Policy:
    """The settings retries follow: how much more memory and walltime, the backoff, and
    brokerage's data weight (``retry_elsewhere``)."""

    memory_factor: float = 1.5
    walltime_factor: float = 1.5
    backoff_s: float = 0.0
    backoff_max_s: float = 3600.0
    data_weight: float = 10.0

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        """The policy a deployment is configured with."""
        return cls(
            settings.memory_retry_factor,
            settings.walltime_retry_factor,
            settings.retry_backoff_s,
            settings.retry_backoff_max_s,
            settings.brokerage_data_weight,
        )

    def backoff(self, attempt: int) -> float:
        """Seconds the attempt after ``attempt`` waits: drawn from the upper half of
        ``min(backoff_max_s, backoff_s * 2**(attempt - 1))`` (0: no backoff)."""
        if self.backoff_s <= 0:
            return 0.0
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** min(attempt - 1, 32))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class Decision:
    """Whether to retry, why, and the spec of the next attempt; whether it goes to
    another site, how long it waits, and the rules that matched."""

    retry: bool
    why: str
    spec: JobSpec
    elsewhere: bool = False
    delay_s: float = 0.0
    ruling: Ruling = NO_RULE


def decide(
    row: RowMapping,
    failure: Failure,
    policy: Policy = Policy(),
    by_hand: bool = False,
    rules: RuleSet = DEFAULT_SET,
) -> Decision:
    """Apply the retry rules to a job whose current attempt just failed."""
    spec = spec_of(row)
    ruling = rules.ruling(_failed(row, failure))
    if by_hand:
        return _retried(spec, ruling, policy, 0.0, by_hand=True)
    refusal = _fixed_refusal(spec, failure) or _rule_refusal(row, ruling.rule)
    if refusal is not None:
        return Decision(False, refusal, spec, ruling=ruling)
    return _retried(spec, ruling, policy, policy.backoff(row["attempt"]))


def _failed(row: RowMapping, failure: Failure) -> Failed:
    return Failed(
        failure.family,
        failure.code,
        failure.exit_code,
        failure.diagnostic,
        row.get("site"),
        row.get("task_id"),
    )


def _fixed_refusal(spec: JobSpec, failure: Failure) -> str | None:
    """What no rule changes: a kill, an exit code the job's spec marks final."""
    if (failure.family, failure.code) in _KILLED:
        return "killed on request"
    if failure.exit_code is not None and failure.exit_code in spec.final_exit_codes:
        return f"payload exit code {failure.exit_code} is final (the job's final_exit_codes)"
    return None


def _rule_refusal(row: RowMapping, rule: RetryRule | None) -> str | None:
    """``no_retry``, or the last attempt: the job's, or fewer by ``limit_retry``."""
    if rule is not None and rule.action == Action.NO_RETRY:
        return rule.says()
    limit, by = row["max_attempts"], ""
    if rule is not None and rule.max_attempts is not None and rule.max_attempts < limit:
        limit, by = rule.max_attempts, f" ({rule.says()})"
    if row["attempt"] >= limit:
        return f"attempt {row['attempt']} was the last of {limit}{by}"
    return None


def _retried(
    spec: JobSpec, ruling: Ruling, policy: Policy, delay_s: float, by_hand: bool = False
) -> Decision:
    """The retry's next spec and why, as the deciding rule's action has it (a retry by
    hand takes the rule's changes, not its limits)."""
    rule = ruling.rule
    action = rule.action if rule is not None else None
    plain = "retried by hand" if by_hand else "retryable failure"
    why = plain
    if action == Action.INCREASE_MEMORY:
        spec = dataclasses.replace(spec, memory_mb=math.ceil(spec.memory_mb * policy.memory_factor))
        why = f"{plain}, with {spec.memory_mb} MB"
    elif action == Action.INCREASE_WALLTIME:
        walltime = math.ceil(spec.walltime_s * policy.walltime_factor)
        spec = dataclasses.replace(spec, walltime_s=walltime)
        why = f"{plain}, with a walltime of {walltime} s"
    elif action == Action.RETRY_ELSEWHERE:
        why = f"{plain}, at another site"
    if rule is not None and not (by_hand and action in _LIMITS):
        why += f" by {rule.says()}"
    if delay_s > 0:
        why += f"; backoff {delay_s:.1f} s"
    return Decision(True, why, spec, action == Action.RETRY_ELSEWHERE, delay_s, ruling)


def decide_all(
    conn: Connection,
    failed: Iterable[tuple[RowMapping, Failure]],
    policy: Policy,
    by_hand: bool = False,
) -> list[tuple[RowMapping, Decision]]:
    """Each failed job's decision by the rules in force; the rules that decided counted,
    and passive ones logged (a retry by hand is a person's decision: not counted)."""
    pairs = list(failed)
    if not pairs:
        return []
    rules = rule_set(conn)
    decided = [(row, decide(row, f, policy, by_hand, rules)) for row, f in pairs]
    for row, d in decided:
        if not by_hand:
            _count(row, d)
    return decided


def _count(row: RowMapping, decision: Decision) -> None:
    """The metric of every rule that matched; a log line for each passive one."""
    rule = decision.ruling.rule
    if rule is not None:
        RETRY_RULE_MATCHES.labels(rule=rule.name, action=rule.action.value, passive="false").inc()
    for p in decision.ruling.passive:
        RETRY_RULE_MATCHES.labels(rule=p.name, action=p.action.value, passive="true").inc()
        log.info(
            "job %s attempt %d: passive retry rule %s matched (it would %s); decided: %s",
            row["id"],
            row["attempt"],
            p.name,
            p.doing(),
            decision.why,
            extra=job_context(job_id=row["id"], attempt=row["attempt"], site=row.get("site")),
        )


def retry(
    conn: Connection,
    decided: Iterable[tuple[RowMapping, Decision]],
    now: datetime,
    limits: Limits,
    policy: Policy = Policy(),
) -> int:
    """Record each decision on its failed attempt and start the next attempt of each job
    decided for: set up now (activated within the sites' ``limits``), or left
    ``defined`` until its backoff ends. How many started."""
    decided = list(decided)
    _record(conn, decided)
    wanted = [(row, d) for row, d in decided if d.retry]
    if not wanted:
        return 0
    started = new_attempts(conn, wanted, now)
    # A job never placed (no site) starts its next attempt `defined`, for brokerage.
    moved = [(row, d) for row, d in wanted if row["id"] in started and row["site"] is not None]
    placements = _placements(conn, moved, policy)
    at_once = [p for p, (_, d) in zip(placements, moved, strict=True) if d.delay_s <= 0]
    later = [(p, d.delay_s) for p, (_, d) in zip(placements, moved, strict=True) if d.delay_s > 0]
    backoff.wait(conn, later, now)
    set_up(conn, at_once, now, limits)
    for p in at_once:
        _started(p)
    return len(placements)


def _placements(
    conn: Connection, moved: list[tuple[RowMapping, Decision]], policy: Policy
) -> list[Placement]:
    """Where each next attempt goes: the failed attempt's site, or (``retry_elsewhere``)
    another one brokerage chooses."""
    brokerage = Brokerage(conn, policy.data_weight) if any(d.elsewhere for _, d in moved) else None
    placements = []
    for row, d in moved:
        attempt, site = row["attempt"] + 1, row["site"]
        same = Placement(d.spec, attempt, site, f"{d.why}; same site as attempt {row['attempt']}")
        if brokerage is None or not d.elsewhere:
            placements.append(same)
        elif d.spec.site:
            placements.append(dataclasses.replace(same, why=f"{same.why} (the job names it)"))
        else:
            choice = brokerage.decide(d.spec, exclude={site})
            if choice.site is None:
                why = f"{same.why}: no other site fits ({choice.why})"
                placements.append(dataclasses.replace(same, why=why))
            else:
                why = f"{d.why}; {choice.why}"
                placements.append(Placement(d.spec, attempt, choice.site, why, choice.record()))
    return placements


def _started(p: Placement) -> None:
    log.info(
        "job %s: attempt %d started (%s)",
        p.spec.id,
        p.attempt,
        p.why,
        extra=job_context(job_id=p.spec.id, attempt=p.attempt, task_id=p.spec.task_id, site=p.site),
    )


def _record(conn: Connection, decided: list[tuple[RowMapping, Decision]]) -> None:
    """Write each decision on the attempt that failed (``pandamq job`` shows it)."""
    if not decided:
        return
    conn.execute(
        update(job_attempts)
        .where(
            job_attempts.c.job_id == bindparam("b_id"),
            job_attempts.c.attempt == bindparam("b_attempt"),
        )
        .values(retry_decision=bindparam("b_decision")),
        [
            {
                "b_id": row["id"],
                "b_attempt": row["attempt"],
                "b_decision": f"{'retried' if d.retry else 'not retried'}: {d.why}",
            }
            for row, d in decided
        ],
    )
    for row, d in decided:
        if not d.retry:
            log.info(
                "job %s: attempt %d not retried: %s",
                row["id"],
                row["attempt"],
                d.why,
                extra=job_context(job_id=row["id"], attempt=row["attempt"]),
            )


def new_attempts(
    conn: Connection,
    wanted: list[tuple[RowMapping, Decision]],
    now: datetime,
    ended: JobState = JobState.FAILED,
) -> set[str]:
    """Move each job to its next attempt (``defined``), if it is still the ``ended``
    attempt we saw; the ids of those moved."""
    keys = [(row["id"], row["attempt"]) for row, _ in wanted]
    reset = {
        c: None
        for c in (
            "pilot_id",
            "exit_code",
            "error_family",
            "error_code",
            "diagnostic",
            "heartbeat_at",
            "kill_requested_at",
            "retry_at",
        )
    }
    stmt = (
        update(jobs)
        .where(attempts_in(conn, keys, [ended.value]))
        .values(attempt=jobs.c.attempt + 1, state=JobState.DEFINED.value, modified_at=now, **reset)
        .returning(jobs.c.id)
    )
    started = {r.id for r in conn.execute(stmt)}
    chosen = [(row, d) for row, d in wanted if row["id"] in started]
    if not chosen:
        return started
    conn.execute(
        update(jobs)
        .where(jobs.c.id == bindparam("b_id"))
        .values(spec=bindparam("b_spec"), resource_type=bindparam("b_rtype")),
        [
            {
                "b_id": row["id"],
                "b_spec": dataclasses.asdict(d.spec),
                "b_rtype": resource_type(d.spec.cores, d.spec.memory_mb),
            }
            for row, d in chosen
        ],
    )
    conn.execute(
        insert(job_attempts),
        [
            {
                "job_id": row["id"],
                "attempt": row["attempt"] + 1,
                "state": "defined",
                "created_at": now,
            }
            for row, _ in chosen
        ],
    )
    conn.execute(
        insert(job_transitions),
        [
            {
                "job_id": row["id"],
                "attempt": row["attempt"] + 1,
                "from_state": None,
                "to_state": "defined",
                "at": now,
                "reason": d.why,
            }
            for row, d in chosen
        ],
    )
    return started
