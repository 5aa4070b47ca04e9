"""schemathesis over /api/v1/openapi.json against the running server (a real port), with a valid API key:
no 5xx, and every response matches the document (status, content type, headers, schema)."""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import CHECKS

from tests.api.conftest import World

EXAMPLES_PER_OPERATION = 20
WANTED = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")


def fuzz(base_url: str, headers: dict[str, str]) -> list[str]:
    document = requests.get(f"{base_url}/api/v1/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    checks = [c for c in CHECKS.get_all() if c.__name__ in WANTED]
    assert len(checks) == len(WANTED), [c.__name__ for c in CHECKS.get_all()]
    failures: list[str] = []
    session = requests.Session()
    operations = 0
    for result in schema.get_all_operations():
        operation: Any = result.ok()
        operations += 1

        @hypothesis.given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def run(case: Any) -> None:
            case.call_and_validate(base_url=base_url, session=session, headers=headers, checks=checks)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}"[:2000])
    assert operations >= 25
    return failures


async def test_the_api_conforms_to_its_openapi_document(world: World) -> None:
    base_url = str(world.client.make_url("")).rstrip("/")
    failures = await asyncio.to_thread(fuzz, base_url, world.key(world.a))
    assert not failures, "\n\n".join(failures)
