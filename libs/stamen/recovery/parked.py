"""What may be done with a message parked in STAMEN_DLQ: replayed, resolved (dropped, with the reason,
because nothing is left for it to do), or left for an operator. Pure code: the facts come in."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_DELIVER_REASON = "max_deliver"  # parked by the forwarder after the handler kept failing


class Verdict(StrEnum):
    REPLAY = "replay"
    RESOLVE = "resolve"
    LEAVE = "leave"


@dataclass(frozen=True)
class MessageFacts:
    reason: str  # why it was parked: max_deliver, malformed, unknown_type, undecodable
    decodes: bool  # its body is an event this build reads
    workset_id: str | None
    workset_exists: bool
    handled: bool  # the consumer has handled the event since (its inbox claim)
    replays: int  # how often it was replayed to this consumer already
    age_seconds: float


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    why: str


def replay_refusal(facts: MessageFacts) -> str | None:
    """Why an operator's replay is refused, or None: only an event this build can read, whose workset
    (if it names one) still exists, can be handled again."""
    if not facts.decodes:
        return (f"its body is not an event this version of stamen can read (parked as {facts.reason}); "
                "sent back it would be parked again")  # fmt: skip
    if facts.workset_id and not facts.workset_exists:
        return f"its workset {facts.workset_id} no longer exists"
    return None


def decide(facts: MessageFacts, *, after_seconds: float, max_replays: int) -> Decision:
    """The reconciler's choice for one parked message of its own consumers."""
    if facts.reason != MAX_DELIVER_REASON or not facts.decodes:
        return Decision(Verdict.LEAVE, f"parked as {facts.reason}: an operator decides (stamen dlq messages)")
    if facts.workset_id and not facts.workset_exists:
        return Decision(Verdict.RESOLVE, f"its workset {facts.workset_id} no longer exists")
    if facts.handled:
        return Decision(Verdict.RESOLVE, "handled since it was parked (the consumer's inbox has it)")
    if facts.age_seconds < after_seconds:
        return Decision(
            Verdict.LEAVE, f"parked {facts.age_seconds:.0f}s ago; replayed after {after_seconds:g}s"
        )
    if facts.replays >= max_replays:
        return Decision(Verdict.LEAVE, f"replayed {facts.replays} times already; left for an operator")
    return Decision(Verdict.REPLAY, f"replay {facts.replays + 1} of at most {max_replays}")
