"""Rucio as the DDM: datasets, replicas and replication rules through ``rucio-clients``.

A subscription is a replication rule on the dispatch dataset (``rucio_scope:<name>``)
at the site's RSE (``rucio_rses``); Rucio's daemons move the files. The backend
polls each rule in progress (at most every ``rucio_poll_interval_s``) and reports
the replicas Rucio has made available at the RSE, then the rule ``OK`` (done) or
``STUCK``/``SUSPENDED`` (failed, with Rucio's error). Registering adds replicas
(bytes, adler32) at the RSE and attaches them to the dataset; closing closes it.
pandamq's SQL catalogue stays a mirror, written after Rucio took the change.

Rucio errors become pandamq's at the one place that calls Rucio (``_call``): a
server down or slow is ``DDMUnavailable`` (recoverable: the bridge backs off and
asks again), a refusal ``DDMRefused`` (permanent: a subscription refused fails,
with Rucio's reason, and its jobs are retried by the rules like any DDM failure).
docs/ddm.md maps every call onto Rucio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import Engine

from broker.errors import BadInput, DDMRefused, DDMUnavailable, NameTaken
from broker.settings import Settings
from broker.store import datasets
from broker.store.clock import now
from broker.store.datasets import FileRecord
from broker.store.engine import transaction
from ddm_bridge.backend import Report
from ddm_bridge.rucio_login import connect
from ddm_bridge.se import Checksum, discard, keep_staged, mismatch

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Rule states that end a subscription as failed.
FAILED_RULES = ("STUCK", "SUSPENDED")
#: Rucio's answers that mean "try again later", besides a connection that failed.
_UNAVAILABLE = frozenset(
    {
        "ServerConnectionException",
        "ServiceUnavailable",
        "DatabaseException",
        "ResourceTemporaryUnavailable",
        "ReplicationRuleCreationTemporaryFailed",
    }
)


class RucioRefused(DDMRefused):
    """A refusal from Rucio; ``kind`` names Rucio's exception (``RSENotFound``, ...)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _Subscription:
    """A rule the backend watches, and the files it has reported placed."""

    rule_id: str
    rse: str
    reported: set[str] = field(default_factory=set)


class RucioDDM:
    """A DDM backend on a Rucio server; see ``ddm_bridge.backend.DDMBackend``."""

    def __init__(self, settings: Settings, engine: Engine, client: Any = None) -> None:
        self._settings = settings
        self._engine = engine
        self._client = client
        self._scope = settings.rucio_scope
        self._subscriptions: dict[tuple[str, str], _Subscription] = {}
        self._reports: list[Report] = []
        self._polled = 0.0

    def subscribe(self, dataset: str, site: str) -> None:
        """Make the dispatch dataset in Rucio and a rule for it at ``site``'s RSE."""
        if (dataset, site) in self._subscriptions:
            return
        rse = self._settings.rse_of(site)
        with transaction(self._engine) as conn:
            records = [record for record, _ in datasets.sources(conn, dataset)]
        try:
            self._ensure_dataset(dataset, records, close=True)
            rule_id = self._rule(dataset, rse)
        except (DDMRefused, BadInput) as exc:
            log.warning("subscription of %s to %s refused: %s", dataset, site, exc)
            self._reports.append(Report(dataset, site, "failed", error=str(exc)))
            return
        self._subscriptions[(dataset, site)] = _Subscription(rule_id, rse)
        self._reports.append(Report(dataset, site, "transferring"))

    def cancel(self, dataset: str, site: str) -> None:
        """Delete the subscription's rule."""
        subscription = self._subscriptions.pop((dataset, site), None)
        rule_id = subscription.rule_id if subscription else self._find_rule(dataset, site)
        if rule_id is not None:
            self._delete_rule(rule_id)

    def reports(self) -> list[Report]:
        """What the rules in progress did since the last look; nothing new before
        ``rucio_poll_interval_s`` has passed."""
        if time.monotonic() - self._polled >= self._settings.rucio_poll_interval_s:
            self._polled = time.monotonic()
            for (dataset, site), subscription in list(self._subscriptions.items()):
                self._look(dataset, site, subscription)
        taken, self._reports = self._reports, []
        return taken

    def register(
        self, dataset: str, site: str, placed: Sequence[tuple[FileRecord, Path]], kind: str
    ) -> int:
        """Check each file on the RSE against its size and adler32, add it as a replica at
        the site's RSE and attach it to ``dataset``; then catalogue it in pandamq."""
        rse = self._settings.rse_of(site)
        self._check_placed(rse, placed)
        files = [_did(r) | {"bytes": r.size, "adler32": r.adler32} for r, _ in placed]
        if files:
            self._call(f"add replicas at {rse}", self._rucio().add_replicas, rse=rse, files=files)
        self._ensure_dataset(dataset, [r for r, _ in placed], close=False)
        with transaction(self._engine) as conn:
            return datasets.register(
                conn, dataset, [(r, str(p)) for r, p in placed], site, now(), kind=kind
            )

    def add_outputs(
        self, site: str, job_id: str, attempt: int, files: Sequence[tuple[str, FileRecord]]
    ) -> dict[str, str]:
        """Keep the attempt's files at ``site``'s RSE, each attached to its dataset in Rucio;
        the path of each. (pandamq's SQL mirror is the bridge's to write.)

        A file the pilot uploaded through Rucio (``pilot_storage = "rucio"``) is a replica
        at the RSE already: it is kept as it is, once its bytes and adler32 in Rucio are the
        reported ones. A file the pilot staged on the SE as a directory is moved to where the
        RSE keeps its DID (its ``file`` protocol's path: Rucio puts ``user.x`` scopes under
        ``user/x/``), checked against its size and adler32, and added as a replica there.

        A refusal by Rucio (an unknown scope, a quota exceeded) is ``BadInput`` naming
        Rucio's reason: the job fails with a DDM error code. Doing it again is harmless:
        the replicas added the first time are found at the RSE and kept as they are.
        """
        records = [record for _, record in files]
        rse = self._settings.rse_of(site)
        try:
            there = self._replicas_at(rse, records)
            staged = [r for r in records if r.did not in there]
            places = self._places(rse, staged)
            kept = keep_staged(
                self._settings.ddm_root,
                site,
                job_id,
                attempt,
                staged,
                lambda r: places[f"{r.scope}:{r.name}"],
            )
            if staged:
                new = [_did(r) | {"bytes": r.size, "adler32": r.adler32} for r in staged]
                self._call(f"add replicas at {rse}", self._rucio().add_replicas, rse=rse, files=new)
            kept |= {r.did: there[r.did] for r in records if r.did in there}
            by_dataset: dict[str, list[FileRecord]] = {}
            for dataset, record in files:
                by_dataset.setdefault(dataset, []).append(record)
            for dataset, in_it in by_dataset.items():
                self._ensure_dataset(dataset, in_it, close=False)
        except RucioRefused as exc:
            scopes = ", ".join(sorted({r.scope for r in records}))
            raise BadInput(
                f"outputs of job {job_id} (scope {scopes}) not registered in Rucio: {exc}"
            ) from exc
        return kept

    def discard_outputs(self, site: str, job_id: str, attempt: int) -> None:
        """Remove the attempt's staging directory (nothing of it is in Rucio yet)."""
        discard(self._settings.ddm_root, site, job_id, attempt)

    def close(self, dataset: str) -> None:
        """Close the dataset in Rucio (if Rucio has it), then in the catalogue."""
        try:
            self._call(f"close {self._scope}:{dataset}", self._rucio().close, self._scope, dataset)
        except RucioRefused as exc:
            if exc.kind not in ("DataIdentifierNotFound", "UnsupportedOperation"):
                raise
            log.info("dataset %s: nothing to close in Rucio (%s)", dataset, exc)
        with transaction(self._engine) as conn:
            datasets.close(conn, dataset, now())

    def stop(self) -> None:
        """Forget the rules watched (Rucio keeps them; a new bridge finds them again)."""
        self._subscriptions.clear()

    def _replicas_at(self, rse: str, records: Sequence[FileRecord]) -> dict[str, str]:
        """The path of each of ``records`` that Rucio has a replica of at ``rse``, by DID;
        ``BadInput`` for one whose bytes or adler32 in Rucio are not the record's."""
        if not records:
            return {}
        wanted = {r.did: r for r in records}
        replicas = self._call(
            f"list replicas at {rse}",
            self._rucio().list_replicas,
            [_did(r) for r in records],
            schemes=["file"],
            rse_expression=rse,
        )
        there = {}
        for replica in replicas:
            did, pfns = f"{replica['scope']}:{replica['name']}", replica.get("rses", {}).get(rse)
            record = wanted.get(did)
            if record is None or not pfns:
                continue
            found = (replica.get("bytes"), str(replica.get("adler32") or "").zfill(8))
            if found != (record.size, record.adler32):
                raise BadInput(
                    f"{did} not accepted: Rucio has it at {rse} with {found[0]} bytes, "
                    f"adler32 {found[1]}, not {record.size} bytes, adler32 {record.adler32}"
                )
            there[did] = urlsplit(pfns[0]).path
        return there

    def _rucio(self) -> Any:
        """The Rucio client, logged in at first use."""
        if self._client is None:
            self._client = self._call("log in", connect, self._settings)
        return self._client

    def _call(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)``, with Rucio's errors turned into pandamq's."""
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            converted = _converted(exc, what, self._settings.rucio_host)
            if converted is None:
                raise
            raise converted from exc

    def _ensure_dataset(self, dataset: str, records: Sequence[FileRecord], close: bool) -> None:
        """The Rucio dataset ``rucio_scope:dataset`` with ``records`` attached (closed, if
        ``close``); what is there already is left as it is."""
        client = self._rucio()
        name = f"{self._scope}:{dataset}"
        try:
            self._call(f"add dataset {name}", client.add_dataset, self._scope, dataset)
        except RucioRefused as exc:
            if exc.kind != "DataIdentifierAlreadyExists":
                raise
        present = {
            f"{f['scope']}:{f['name']}"
            for f in self._call(f"list {name}", client.list_files, self._scope, dataset)
        }
        new = [_did(r) for r in records if r.did not in present]
        if new:
            self._call(f"attach files to {name}", client.attach_dids, self._scope, dataset, new)
        if close:
            meta = self._call(f"read {name}", client.get_metadata, self._scope, dataset)
            if meta.get("is_open"):
                self._call(f"close {name}", client.close, self._scope, dataset)

    def _rule(self, dataset: str, rse: str) -> str:
        """The rule of pandamq's account for ``dataset`` at ``rse``: the one there, or a new one."""
        found = self._rule_at(dataset, rse)
        if found is not None:
            return found
        (rule_id,) = self._call(
            f"add a rule for {self._scope}:{dataset} at {rse}",
            self._rucio().add_replication_rule,
            dids=[{"scope": self._scope, "name": dataset}],
            copies=1,
            rse_expression=rse,
            lifetime=self._settings.rucio_rule_lifetime_s,
            comment="pandamq dispatch",
        )
        return str(rule_id)

    def _rule_at(self, dataset: str, rse: str) -> str | None:
        rules = self._call(
            f"list the rules of {self._scope}:{dataset}",
            self._rucio().list_did_rules,
            self._scope,
            dataset,
        )
        account = self._rucio().account
        for rule in rules:
            if rule["rse_expression"] == rse and rule["account"] == account:
                return str(rule["id"])
        return None

    def _find_rule(self, dataset: str, site: str) -> str | None:
        try:
            return self._rule_at(dataset, self._settings.rse_of(site))
        except DDMRefused:
            return None

    def _delete_rule(self, rule_id: str) -> None:
        try:
            self._call(f"delete rule {rule_id}", self._rucio().delete_replication_rule, rule_id)
        except DDMRefused as exc:
            log.info("rule %s: not deleted: %s", rule_id, exc)

    def _look(self, dataset: str, site: str, subscription: _Subscription) -> None:
        """Report what one rule did since the last look."""
        try:
            rule = self._call(
                f"read rule {subscription.rule_id}",
                self._rucio().get_replication_rule,
                subscription.rule_id,
            )
            placed = self._placed(dataset, subscription)
        except (DDMRefused, BadInput) as exc:  # (the rule or the dataset was deleted)
            self._reports.append(Report(dataset, site, "failed", error=str(exc)))
            del self._subscriptions[(dataset, site)]
            return
        state = rule["state"]
        if placed or state not in ("OK", *FAILED_RULES):
            self._reports.append(Report(dataset, site, "transferring", placed=placed))
        if state == "OK":
            self._reports.append(Report(dataset, site, "done"))
            del self._subscriptions[(dataset, site)]
        elif state in FAILED_RULES:
            error = f"Rucio rule {subscription.rule_id} is {state}: {rule.get('error') or ''}"
            self._reports.append(Report(dataset, site, "failed", error=error.rstrip(": ")))
            del self._subscriptions[(dataset, site)]
            self._delete_rule(subscription.rule_id)

    def _placed(self, dataset: str, subscription: _Subscription) -> list[tuple[str, str]]:
        """(DID, path) of the dataset's files available at the RSE, not reported yet."""
        replicas = self._call(
            f"list the replicas of {self._scope}:{dataset} at {subscription.rse}",
            self._rucio().list_replicas,
            [{"scope": self._scope, "name": dataset}],
            schemes=["file"],
            rse_expression=subscription.rse,
        )
        placed = []
        for replica in replicas:
            did = f"{replica['scope']}:{replica['name']}"
            pfns = replica.get("rses", {}).get(subscription.rse) or []
            if did not in subscription.reported and pfns:
                subscription.reported.add(did)
                placed.append((did, urlsplit(pfns[0]).path))
        return placed

    def _places(self, rse: str, records: Sequence[FileRecord]) -> dict[str, Path]:
        """Where ``rse`` keeps each of ``records``, by DID (its ``file`` protocol's path)."""
        if not records:
            return {}
        pfns = self._call(
            f"ask {rse} where its files are",
            self._rucio().lfns2pfns,
            rse,
            [r.did for r in records],
            scheme="file",
        )
        return {did: Path(urlsplit(pfn).path) for did, pfn in pfns.items() if pfn}

    def _check_placed(self, rse: str, placed: Sequence[tuple[FileRecord, Path]]) -> None:
        """Each file is right (size, adler32) and where the RSE keeps its DID."""
        places = self._places(rse, [record for record, _ in placed])
        for record, path in placed:
            problem = mismatch(path, Checksum(record.size, record.adler32))
            expected = places.get(record.did)
            if problem is None and (expected is None or expected.resolve() != path.resolve()):
                problem = f"{path} is not where {rse} keeps it ({expected or 'nowhere'})"
            if problem is not None:
                raise BadInput(f"cannot register {record.did}: {problem}")


def _did(record: FileRecord) -> dict[str, Any]:
    return {"scope": record.scope, "name": record.name}


def _converted(exc: Exception, what: str, host: str) -> Exception | None:
    """pandamq's error for what Rucio (or the way to it) answered to ``what``; None for
    an error that is not Rucio's nor the network's (a bug: it goes up as it is)."""
    kind = type(exc).__name__
    if not type(exc).__module__.startswith("rucio") and not isinstance(exc, OSError):
        return None
    text = " ".join(str(exc).split()) or kind
    if kind in _UNAVAILABLE or isinstance(exc, OSError | TimeoutError):
        return DDMUnavailable(f"Rucio at {host} did not answer ({what}): {text}")
    if kind in ("FileConsistencyMismatch", "FileReplicaAlreadyExists", "FileAlreadyExists"):
        return NameTaken(f"Rucio has another file under that name ({what}): {text}")
    return RucioRefused(f"Rucio refused to {what}: {kind}: {text}", kind)
