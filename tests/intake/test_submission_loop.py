"""Where a submitted document is checked: an already parsed one of a few samples (the API's) on the event
loop, which costs less than the trip to a thread and back (each waits for the GIL on a busy loop); a large
one, or raw bytes still to be parsed (NATS), in a thread, so the loop keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from stamen.inputs.submission import submit_document
from stamen.inputs.validation import INLINE_MAX_SAMPLES


def spec(samples: int) -> dict[str, Any]:
    rows = [
        {"id": f"S{i}", "platform": "ILLUMINA", "r1": f"s3://lab/r/S{i}_R1.fastq.gz",
         "r2": f"s3://lab/r/S{i}_R2.fastq.gz"}
        for i in range(samples)
    ]  # fmt: skip
    return {"name": f"w{samples}", "pipeline": "fastq-qc", "reference_genome": "GRCh38", "samples": rows}


async def test_a_small_parsed_document_is_checked_on_the_loop(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: list[str] = []
    to_thread = asyncio.to_thread

    async def recorded(work: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        handed.append(work.__name__)
        return await to_thread(work, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", recorded)

    async def submit(document: Any) -> None:
        outcome = await submit_document(
            pool, document, media="json", tenant="acme", idempotency_key=None, region="us-west-2",
            source="api", actor="t",
        )  # fmt: skip
        # Its bucket is not acme's: refused with findings, the same wherever the check ran.
        assert not outcome.accepted and "S3-ACCESS-001" in {f.code for f in outcome.findings}

    await submit(spec(1))
    assert handed == []
    await submit(spec(INLINE_MAX_SAMPLES + 1))
    assert handed == ["_checked"]
    await submit(
        b'{"name": "w1", "samples": [{"id": "S0", "platform": "ILLUMINA", "r1": "s3://lab/r/S0_R1.fastq.gz"}]}'
    )  # bytes: parsed in the thread
    assert handed == ["_checked", "_checked"]
