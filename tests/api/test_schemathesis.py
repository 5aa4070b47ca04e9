"""schemathesis over /api/v1/openapi.json against the running server (a real port): no 5xx, and every response
matches the document (status, content type, headers, schema). Once with tenant A's API key (every operation),
once as an operator (the operator-only operations and the listings operators see whole), and then hand-made
cases as the operator that succeed, so the 2xx answers of operator routes are checked against the document
too (random names almost never hit an existing cluster or dead letter)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import CHECKS

from services.portal.api.routes import ROUTES
from tests.api.conftest import World

# A longer run by hand: STAMEN_FUZZ_EXAMPLES=200 python -m pytest tests/api/test_schemathesis.py
EXAMPLES_PER_OPERATION = int(os.environ.get("STAMEN_FUZZ_EXAMPLES", "20"))
WANTED = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# As an operator: what only an operator reaches, and listings that answer an operator with every tenant.
# Not auth_logout: it would sign the fuzzing operator out for the rest of the run.
OPERATOR_FUZZED = {r.name for r in ROUTES if r.access in ("operator", "events")} | {
    "customers_list",
    "customers_get",
    "customers_usage",
    "worksets_list",
    "worksets_get",
    "clusters_list",
    "api_keys_list",
    "nats_credentials_list",
    "auth_register",
    "buckets_list",
}
BY_LABEL = {f"{r.method} {r.full_path}": r.name for r in ROUTES}


def _checks() -> list[Any]:
    """The wanted checks (the OpenAPI ones are registered once a document has been loaded)."""
    checks = [c for c in CHECKS.get_all() if c.__name__ in WANTED]
    assert len(checks) == len(WANTED), [c.__name__ for c in CHECKS.get_all()]
    return checks


def _operations(base_url: str) -> list[Any]:
    document = requests.get(f"{base_url}/api/v1/openapi.json", timeout=10).json()
    return [result.ok() for result in schemathesis.openapi.from_dict(document).get_all_operations()]


def fuzz(
    base_url: str,
    headers: dict[str, str],
    *,
    examples: int = EXAMPLES_PER_OPERATION,
    wanted: Callable[[str], bool] = lambda _: True,
) -> tuple[int, list[str]]:
    all_operations = _operations(base_url)
    checks = _checks()
    failures: list[str] = []
    session = requests.Session()
    operations = 0
    for operation in all_operations:
        if not wanted(BY_LABEL[f"{operation.method.upper()} {operation.path}"]):
            continue
        operations += 1

        @hypothesis.given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        def run(case: Any) -> None:
            case.call_and_validate(base_url=base_url, session=session, headers=headers, checks=checks)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}"[:2000])
    return operations, failures


def operator_successes(base_url: str, headers: dict[str, str], world: World) -> list[str]:
    """Cases that must succeed, validated against the document like the fuzzed ones."""
    operations = {BY_LABEL[f"{op.method.upper()} {op.path}"]: op for op in _operations(base_url)}
    checks = _checks()
    session = requests.Session()
    b = world.b.target
    cluster = {"name": "fuzz-1", "region": "us-west-2", "max_concurrent": 2, "data_locations": ["ref-data"]}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("clusters_add", {"body": cluster}),
        ("clusters_drain", {"path_parameters": {"name": "fuzz-1"}}),
        ("clusters_activate", {"path_parameters": {"name": "fuzz-1"}}),
        ("clusters_list", {}),
        ("clusters_remove", {"path_parameters": {"name": "fuzz-1"}}),
        ("dlq_list", {"query": {"tenant": b.tenant}}),
        ("dlq_inspect", {"path_parameters": {"workset_id": b.dead_letter_id}}),
        (
            "dlq_requeue",
            {"path_parameters": {"workset_id": b.dead_letter_id}, "body": {"changes": {"max_retries": 4}}},
        ),
        ("dlq_purge", {"path_parameters": {"workset_id": world.a.target.dead_letter_id}}),
        (
            "customers_create",
            {
                "body": {
                    "customer_name": "Fuzz Labs",
                    "email": "admin@fuzz.example",
                    "max_concurrent_worksets": 2,
                    "max_storage_gb": 10,
                }
            },
        ),
        ("customers_list", {"query": {"limit": 1}}),
        ("customers_usage", {"path_parameters": {"customer_id": b.tenant}}),
        ("worksets_get", {"path_parameters": {"workset_id": b.workset_id}}),
        ("api_keys_create", {"body": {"name": "fuzz", "ttl_days": 1, "customer_id": b.tenant}}),
        ("api_keys_list", {"query": {"tenant": b.tenant}}),
        ("s3_events", {"body": {"Records": []}}),
        (
            "bucket_grants_create",
            {"body": {"tenant": b.tenant, "bucket": "fuzz-shared", "access": "read-only"}},
        ),
        ("buckets_list", {"query": {"tenant": b.tenant}}),
        ("bucket_grants_revoke", {"path_parameters": {"tenant": b.tenant, "bucket": "fuzz-shared"}}),
    ]
    failures = []
    for name, parts in cases:
        case = operations[name].Case(**parts)
        try:
            response = case.call_and_validate(
                base_url=base_url, session=session, headers=headers, checks=checks
            )
        except Exception as exc:
            failures.append(f"{name}: {exc}"[:2000])
            continue
        if not 200 <= response.status_code < 300:
            failures.append(f"{name}: {response.status_code} {response.text[:500]}")
    return failures


async def test_the_api_conforms_to_its_openapi_document(world: World) -> None:
    base_url = str(world.client.make_url("")).rstrip("/")
    operations, failures = await asyncio.to_thread(fuzz, base_url, world.key(world.a))
    assert operations >= 25
    assert not failures, "\n\n".join(failures)


async def test_operator_answers_conform_to_the_document(world: World) -> None:
    base_url = str(world.client.make_url("")).rstrip("/")
    operations, failures = await asyncio.to_thread(
        fuzz, base_url, world.operator, wanted=OPERATOR_FUZZED.__contains__
    )
    assert operations == len(OPERATOR_FUZZED)
    failures += await asyncio.to_thread(operator_successes, base_url, world.operator, world)
    assert not failures, "\n\n".join(failures)
