"""The one error tree of pandamq.

Library errors (kombu, py-amqp, SQLAlchemy, OpenSSL) are converted into these
at the one place that calls the library, with ``raise ... from exc``.
"""


class PandaMQError(Exception):
    """Base of every error pandamq raises on purpose."""


class BadInput(PandaMQError):
    """The caller gave something invalid; retrying the same input cannot help."""


class SpecError(BadInput):
    """A job spec or a message failed validation."""


class ConfigError(BadInput):
    """The settings (TOML file, environment, flags) are invalid."""


class UnknownSite(BadInput):
    """A job names a site that is not in the site catalogue."""


class NameTaken(BadInput):
    """A file's DID is registered already with other content: another file has its name."""


class NotFound(BadInput):
    """A job, site or other record asked for does not exist."""


class RecoverableError(PandaMQError):
    """A service is unavailable for now; the same call may succeed later."""


class BrokerUnavailable(RecoverableError):
    """The message broker (RabbitMQ) cannot be reached or dropped the connection."""


class DatabaseUnavailable(RecoverableError):
    """The SQL database cannot be reached."""


class NoAnswer(RecoverableError):
    """The broker service did not answer a request in time (not running, or busy)."""


class SiteNotServed(RecoverableError):
    """A pilot's site has no job queues on RabbitMQ: the site is not in the catalogue,
    or the broker service has not declared its queues yet."""


class PublishFailed(RecoverableError):
    """The message broker refused (nacked or returned) a publish, or did not confirm it."""


class PermanentError(PandaMQError):
    """Something is wrong that waiting will not fix."""


class BrokerRefused(PermanentError):
    """The message broker refused an operation (permissions, a queue declared differently)."""


class CertificateProblem(PermanentError):
    """A certificate has expired, is not trusted, or is not for the host it is used for."""


class DatabaseRefused(PermanentError):
    """The database server answers but refuses the connection (no such database or user,
    a wrong password): waiting will not fix it."""


class SchemaMissing(PermanentError):
    """The database has no pandamq schema, or an old one."""


class StatementFailed(PermanentError):
    """The database is up but failed a statement for the statement's own sake (too many
    parameters, a missing table): running it again cannot help."""


class IllegalTransition(PermanentError):
    """A job state change that the state machine does not allow."""


class NotAllowed(BadInput):
    """The user may not do what it asks (another user's job without the production role)."""


class BatchSystemUnavailable(RecoverableError):
    """A batch system (Slurm, ...) did not answer a command, or failed it."""


class TransactionConflict(RecoverableError):
    """The database ended a transaction that deadlocked or could not be serialised with
    another one (SQLSTATE 40P01, 40001). It rolled back; running it again will do, and
    the database is up: not an outage."""


class DDMUnavailable(RecoverableError):
    """The DDM (Rucio) cannot be reached or did not answer in time; the same call may
    succeed later."""


class DDMRefused(PermanentError):
    """The DDM (Rucio) answered and refused the request for its own sake: an unknown scope,
    RSE or DID, a quota exceeded, a login it does not accept (an expired certificate)."""
