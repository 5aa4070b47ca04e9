"""Daylily's sentinel objects: when a workset folder is stamen's to pick up, and what stamen writes.

Daylily keeps a workset's state in objects named daylily.<state> inside its folder, each holding an
ISO-8601 timestamp (daylily.error: timestamp<TAB>message). Pure functions; the watcher does the I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from stamen.inputs.objects import ObjectInfo

PREFIX = "daylily."
READY = "daylily.ready"
LOCK = "daylily.lock"
IN_PROGRESS = "daylily.in_progress"
ERROR = "daylily.error"
COMPLETE = "daylily.complete"
IGNORE = "daylily.ignore"
_AFTER_READY = (IN_PROGRESS, ERROR, COMPLETE)
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Decision:
    pick_up: bool
    reason: str
    ready: ObjectInfo | None = None


def decide(sentinels: Mapping[str, ObjectInfo], seen_etags: set[str]) -> Decision:
    """Whether a folder with these sentinels (name -> object) is to be picked up now."""
    ready = sentinels.get(READY)
    if ready is None:
        return Decision(False, "no daylily.ready")
    if IGNORE in sentinels:
        return Decision(False, "daylily.ignore is set", ready)
    if LOCK in sentinels:
        return Decision(False, "daylily.lock is set: a Daylily monitor owns it", ready)
    if ready.etag in seen_etags:
        return Decision(False, "this daylily.ready was already picked up", ready)
    # A state written at or after the ready sentinel means someone handled this ready; a ready written
    # again later (a resubmission after an error) is picked up.
    handled = [
        name
        for name in _AFTER_READY
        if name in sentinels and sentinels[name].last_modified >= ready.last_modified
    ]
    if handled:
        return Decision(False, f"{handled[0]} is newer than daylily.ready", ready)
    return Decision(True, "ready", ready)


def timestamp_body(at: datetime) -> bytes:
    return at.isoformat().encode()


def error_body(at: datetime, message: str) -> bytes:
    """timestamp<TAB>message, the message on one line (Daylily reads the first line)."""
    one_line = re.sub(r"\s+", " ", message).strip()[:MAX_MESSAGE]
    return f"{at.isoformat()}\t{one_line}".encode()


def summarise_findings(findings: Sequence[Mapping[str, object]], *, limit: int = 5) -> str:
    """'rejected: VAL-REF-001 reference_genome: ...; SNF-OBJ-001 samples[0].r1: ...' for daylily.error."""
    errors = [f for f in findings if f.get("severity") == "error"] or list(findings)
    parts = [f"{f.get('code')} {f.get('field') or '-'}: {f.get('message')}" for f in errors[:limit]]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more
