"""The project-wide vocabulary for failures: categories, severities and retry classes.

Every other part of stamen imports these enums from ``stamen.diagnostics`` so that a
category means the same thing in the catalog, the event store and the portal.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCategory(StrEnum):
    RESOURCE = "resource"
    NETWORK = "network"
    DATA = "data"
    CONFIGURATION = "configuration"
    AWS = "aws"
    PIPELINE = "pipeline"
    CLUSTER = "cluster"
    UNKNOWN = "unknown"

    @property
    def code_prefix(self) -> str:
        """The three-letter segment used in error codes, e.g. ``RES`` in ``WS-RES-001``."""
        return _CODE_PREFIXES[self]


_CODE_PREFIXES: dict[ErrorCategory, str] = {
    ErrorCategory.RESOURCE: "RES",
    ErrorCategory.NETWORK: "NET",
    ErrorCategory.DATA: "DAT",
    ErrorCategory.CONFIGURATION: "CFG",
    ErrorCategory.AWS: "AWS",
    ErrorCategory.PIPELINE: "PIP",
    ErrorCategory.CLUSTER: "CLU",
    ErrorCategory.UNKNOWN: "UNK",
}


class Severity(StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class RetryClass(StrEnum):
    """How an automatic retry should treat a failure.

    ``transient`` failures may succeed unchanged; ``resource`` failures may succeed with a
    larger allocation.  The other classes need a human to change config, inputs or code.
    """

    TRANSIENT = "transient"
    RESOURCE = "resource"
    CONFIGURATION = "configuration"
    DATA = "data"
    PERMANENT = "permanent"

    @property
    def is_retryable(self) -> bool:
        return self in (RetryClass.TRANSIENT, RetryClass.RESOURCE)


class EntryTier(StrEnum):
    """How much a catalog entry's match says about the cause, for ranking.

    ``cause`` entries name a failure.  ``family`` entries recognise a tool's or a category's
    vocabulary (an ``sbatch: error:`` line, an AWS error envelope, a curl exit status) that tells
    which kind of failure it is but not exactly which: better than no diagnosis, and better than a
    wrapper.  ``wrapper`` entries recognise a report that a step failed ("Error in rule", a Python
    traceback, GATK's "A USER ERROR has occurred"), which says least about why.
    """

    CAUSE = "cause"
    FAMILY = "family"
    WRAPPER = "wrapper"
