"""Input data for the demo workset (`stamen up`): small, real gzip FASTQ pairs, so the demo passes the
same storage checks as any workset. Written only to an emulator (see IntakeSettings.seed_demo_data)."""

from __future__ import annotations

import gzip
from importlib import resources

import structlog
import yaml

from stamen.inputs.objects import ObjectMissing, ObjectStore
from stamen.inputs.storage import split_s3_uri

log = structlog.get_logger(__name__)
# Whose the demo workset is, and the bucket its inputs and report live in (granted to that tenant).
DEMO_TENANT = "demo"
DEMO_BUCKET = "stamen-demo"
DEMO_READS = 2000
DEMO_READ_LENGTH = 100


def demo_fastq(sample: str, mate: int, *, reads: int = DEMO_READS, length: int = DEMO_READ_LENGTH) -> bytes:
    """Deterministic Illumina-style reads; R1 and R2 share read names, as mates do."""
    bases = "ACGT" * (length // 4 + 1)
    quality = "".join(chr(33 + (i * 7) % 41) for i in range(length))
    lines: list[str] = []
    for i in range(reads):
        lines += [
            f"@DEMO:{sample}:1:1101:{1000 + i}:2000 {mate}:N:0:ATCACG",
            bases[i % 4 : i % 4 + length],
            "+",
            quality,
        ]
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def demo_inputs() -> dict[str, bytes]:
    spec = yaml.safe_load((resources.files("stamen.demo") / "demo_workset.yaml").read_text())
    objects: dict[str, bytes] = {}
    for sample in spec["samples"]:
        for mate, field in ((1, "r1"), (2, "r2")):
            if sample.get(field):
                objects[sample[field]] = demo_fastq(sample["id"], mate)
    return objects


async def seed_demo_inputs(store: ObjectStore) -> list[str]:
    """Upload the demo FASTQs that are not there yet; returns the URIs written."""
    written: list[str] = []
    for uri, body in demo_inputs().items():
        bucket, key = split_s3_uri(uri)
        await store.ensure_bucket(bucket)
        try:
            await store.head(bucket, key)
            continue
        except ObjectMissing:
            pass
        await store.put(bucket, key, body, content_type="application/gzip")
        written.append(uri)
    if written:
        log.info("demo.inputs_seeded", objects=written)
    return written
