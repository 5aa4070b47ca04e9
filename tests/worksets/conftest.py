from __future__ import annotations

import gzip
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
# The project's shared Daylily compatibility fixtures sit next to the checkout (../shared) where the
# workspace has them; a byte-identical copy is vendored here so the Daylily tests run in any checkout
# and never skip. test_daylily_fixtures.py fails when the copy drifts from ../shared.
SHARED_DAYLILY_DIR = REPO_ROOT.parent / "shared" / "compat" / "daylily"
VENDORED_DAYLILY_DIR = FIXTURES / "daylily"


def daylily_fixture_dir() -> Path:
    return SHARED_DAYLILY_DIR if SHARED_DAYLILY_DIR.is_dir() else VENDORED_DAYLILY_DIR


@pytest.fixture
def daylily_dir() -> Path:
    return daylily_fixture_dir()


def fastq_records(count: int, *, mate: int | None = None, length: int = 100) -> bytes:
    """Deterministic Illumina-style FASTQ text."""
    bases = "ACGT" * (length // 4 + 1)
    quality = "".join(chr(33 + (i * 7) % 41) for i in range(length))
    lines = []
    for i in range(count):
        suffix = f" {mate}:N:0:ATCACG" if mate else ""
        lines += [
            f"@A00123:8:H5KCNDSXY:1:1101:{1000 + i}:2000{suffix}",
            bases[i % 4 : i % 4 + length],
            "+",
            quality,
        ]
    return ("\n".join(lines) + "\n").encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
