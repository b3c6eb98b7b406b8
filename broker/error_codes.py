"""Error codes recorded on failed job attempts, grouped by family as in PanDA.

A failed attempt carries a family and a code (and, for the payload, its exit
code in its own column). Standard library only: the pilot imports this module.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorFamily(StrEnum):
    """Who found the failure (PanDA's error columns)."""

    PILOT = "pilot"
    DISPATCHER = "dispatcher"
    TASKBUFFER = "taskbuffer"
    BROKERAGE = "brokerage"
    DDM = "ddm"


class PilotError(IntEnum):
    """Failures the pilot reports."""

    PAYLOAD_FAILED = 1305
    PAYLOAD_NOT_STARTED = 1306
    PILOT_STOPPED = 1307
    OUT_OF_MEMORY = 1308
    KILLED = 1309
    STAGE_IN_FAILED = 1099
    STAGE_OUT_FAILED = 1137


class DispatcherError(IntEnum):
    """Failures the broker's watchdog finds: a job that stopped moving."""

    LOST_HEARTBEAT = 100
    SENT_TIMEOUT = 102
    HOLDING_TIMEOUT = 103
    TRANSFERRING_TIMEOUT = 104
    ASSIGNED_TIMEOUT = 105


class TaskBufferError(IntEnum):
    """Decisions about a job taken in the broker on request."""

    KILLED = 100
    REASSIGNED = 102


class BrokerageError(IntEnum):
    """Brokerage found no site for the job."""

    NO_SITE = 100


class DDMError(IntEnum):
    """Failures of data management: inputs that did not reach the site, outputs not registered."""

    SUBSCRIPTION_FAILED = 200
    SUBSCRIPTION_TIMEOUT = 201
    UNKNOWN_INPUT = 202
    OUTPUT_REGISTRATION = 203
    OUTPUT_NAME_TAKEN = 204


DESCRIPTIONS: dict[tuple[ErrorFamily, int], str] = {
    (ErrorFamily.PILOT, PilotError.PAYLOAD_FAILED): "payload exited with a non-zero code",
    (ErrorFamily.PILOT, PilotError.PAYLOAD_NOT_STARTED): "the pilot could not start the payload",
    (ErrorFamily.PILOT, PilotError.PILOT_STOPPED): "the pilot was stopped while the payload ran",
    (ErrorFamily.PILOT, PilotError.OUT_OF_MEMORY): "payload used more memory than the job asked",
    (ErrorFamily.PILOT, PilotError.KILLED): "payload killed on request",
    (ErrorFamily.DISPATCHER, DispatcherError.LOST_HEARTBEAT): "lost heartbeat",
    (ErrorFamily.DISPATCHER, DispatcherError.SENT_TIMEOUT): "no pilot reply after dispatch",
    (ErrorFamily.DISPATCHER, DispatcherError.HOLDING_TIMEOUT): "too long in holding",
    (ErrorFamily.DISPATCHER, DispatcherError.TRANSFERRING_TIMEOUT): "outputs not transferred",
    (ErrorFamily.DISPATCHER, DispatcherError.ASSIGNED_TIMEOUT): "input data not there in time",
    (ErrorFamily.TASKBUFFER, TaskBufferError.KILLED): "killed on request",
    (
        ErrorFamily.TASKBUFFER,
        TaskBufferError.REASSIGNED,
    ): "pulled back from its site and brokered again",
    (ErrorFamily.BROKERAGE, BrokerageError.NO_SITE): "no site fits the job",
    (ErrorFamily.PILOT, PilotError.STAGE_IN_FAILED): "input files could not be staged in",
    (ErrorFamily.PILOT, PilotError.STAGE_OUT_FAILED): "an output is missing or was not stored",
    (ErrorFamily.DDM, DDMError.SUBSCRIPTION_FAILED): "input data could not be moved to the site",
    (ErrorFamily.DDM, DDMError.SUBSCRIPTION_TIMEOUT): "input data transfer made no progress",
    (ErrorFamily.DDM, DDMError.UNKNOWN_INPUT): "an input file is not registered",
    (ErrorFamily.DDM, DDMError.OUTPUT_REGISTRATION): "outputs could not be registered",
    (ErrorFamily.DDM, DDMError.OUTPUT_NAME_TAKEN): "an output's name is taken by another file",
}
