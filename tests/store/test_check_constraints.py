"""The database's CHECK constraints and the Python definitions they repeat stay in step.

Every CHECK that lists values (`col IN (...)`) or matches a pattern (`col ~ '...'`) is read from a
freshly migrated database and compared with the one Python definition of the same concept. A CHECK
with no definition here fails the test: a new enumerated column gets its Literal or enum first."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, get_args

import asyncpg

from stamen.bus.parked import ParkedMessageAction
from stamen.customers.model import CustomerStatus, ResourceKind, ResourceState
from stamen.domain.clusters import ClusterStatus, ExecutorKind
from stamen.domain.lifecycle import WorksetState
from stamen.domain.regions import RegionOperationKind, RegionOperationOutcome, RegionStatus
from stamen.domain.steps import StepRunState
from stamen.domain.workset import TENANT_ID_REGEX
from stamen.executors.base import JobState
from stamen.inputs.repository import RecordedDropOutcome
from stamen.notifications.kinds import DeliveryState, SubscriptionProtocol, SubscriptionStatus
from stamen.notifications.preferences import Channel
from stamen.tenancy import GrantAccess
from stamen.worksets.rules import BUCKET_NAME_REGEX


def values_of(definition: Any) -> set[str]:
    """A Literal's values or a StrEnum's."""
    if isinstance(definition, type) and issubclass(definition, StrEnum):
        return {member.value for member in definition}
    return set(get_args(definition))


# (table, column) -> the definition its CHECK repeats.
ENUMERATED: dict[tuple[str, str], Any] = {
    ("clusters", "executor"): ExecutorKind,
    ("clusters", "status"): ClusterStatus,
    ("s3_drops", "outcome"): RecordedDropOutcome,
    ("customers", "status"): CustomerStatus,
    ("customer_resources", "kind"): ResourceKind,
    ("customer_resources", "state"): ResourceState,
    ("region_health", "status"): RegionStatus,
    ("region_health", "verdict"): RegionStatus,
    ("region_health_history", "to_status"): RegionStatus,
    ("region_operations", "kind"): RegionOperationKind,
    ("region_operations", "outcome"): RegionOperationOutcome,
    ("dlq_message_actions", "action"): ParkedMessageAction,
    ("notification_deliveries", "channel"): Channel,
    ("notification_deliveries", "state"): DeliveryState,
    ("notification_subscriptions", "protocol"): SubscriptionProtocol,
    ("notification_subscriptions", "status"): SubscriptionStatus,
    ("worksets", "state"): WorksetState,
    ("step_runs", "state"): StepRunState,
    ("bucket_grants", "access"): GrantAccess,
}
PATTERNS: dict[tuple[str, str], str] = {
    ("customers", "customer_id"): TENANT_ID_REGEX,
    ("bucket_grants", "tenant_id"): TENANT_ID_REGEX,
    ("bucket_grants", "bucket"): BUCKET_NAME_REGEX,
}

CHECKS = """
SELECT c.relname AS table_name, pg_get_constraintdef(k.oid) AS definition
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype = 'c' AND n.nspname = current_schema()
ORDER BY 1, 2
"""
# How PostgreSQL prints them back: ((state = ANY (ARRAY['a'::text, 'b'::text]))), ((id ~ '^x$'::text))
_IN_LIST = re.compile(r"^CHECK \(\(?(\w+) = ANY \(ARRAY\[(.*)\]\)\)?\)$")
_MATCHES = re.compile(r"^CHECK \(\((\w+) ~ '(.*)'::text\)\)$")
_LITERAL = re.compile(r"'((?:[^']|'')*)'::text")


async def database_checks(
    pool: asyncpg.Pool,
) -> tuple[dict[tuple[str, str], set[str]], dict[tuple[str, str], str]]:
    listed: dict[tuple[str, str], set[str]] = {}
    patterns: dict[tuple[str, str], str] = {}
    async with pool.acquire() as conn:
        for row in await conn.fetch(CHECKS):
            table, definition = row["table_name"], row["definition"]
            if match := _IN_LIST.match(definition):
                values = {v.replace("''", "'") for v in _LITERAL.findall(match.group(2))}
                listed[(table, match.group(1))] = values
            elif match := _MATCHES.match(definition):
                patterns[(table, match.group(1))] = match.group(2).replace("''", "'")
    return listed, patterns


async def test_every_enumerated_check_has_one_python_definition_with_the_same_values(
    pool: asyncpg.Pool,
) -> None:
    listed, _ = await database_checks(pool)
    assert listed, "no CHECK (col IN (...)) found: did the query or PostgreSQL's formatting change?"
    unmapped = sorted(set(listed) - set(ENUMERATED))
    assert not unmapped, f"CHECKs without a Python definition (add one, then map it here): {unmapped}"
    stale = sorted(set(ENUMERATED) - set(listed))
    assert not stale, f"mapped here but no such CHECK in the database: {stale}"
    differing = {
        where: {"database": sorted(values), "python": sorted(values_of(ENUMERATED[where]))}
        for where, values in listed.items()
        if values != values_of(ENUMERATED[where])
    }
    assert not differing, differing


async def test_every_pattern_check_is_the_python_pattern(pool: asyncpg.Pool) -> None:
    _, patterns = await database_checks(pool)
    unmapped = sorted(set(patterns) - set(PATTERNS))
    assert not unmapped, f"pattern CHECKs without a Python definition: {unmapped}"
    assert patterns == PATTERNS


def test_a_step_run_ends_in_its_jobs_state() -> None:
    """finish_step_run stores the executor's JobState as the step run's state."""
    assert values_of(JobState) <= values_of(StepRunState)
    assert values_of(StepRunState) - values_of(JobState) == {"submitting"}
