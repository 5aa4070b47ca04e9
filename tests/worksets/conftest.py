from __future__ import annotations

import gzip
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# In CI the shared Daylily fixtures sit next to the repository checkout.
DAYLILY_DIR = REPO_ROOT.parent / "shared" / "compat" / "daylily"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def daylily_dir() -> Path:
    if not DAYLILY_DIR.is_dir():
        pytest.skip(f"Daylily compatibility fixtures not found at {DAYLILY_DIR}")
    return DAYLILY_DIR


def fastq_records(count: int, *, mate: int | None = None, length: int = 100) -> bytes:
    """Deterministic Illumina-style FASTQ text."""
    bases = "ACGT" * (length // 4 + 1)
    quality = "".join(chr(33 + (i * 7) % 41) for i in range(length))
    lines = []
    for i in range(count):
        suffix = f" {mate}:N:0:ATCACG" if mate else ""
        lines += [f"@A00123:8:H5KCNDSXY:1:1101:{1000 + i}:2000{suffix}", bases[i % 4:i % 4 + length], "+",
                  quality]
    return ("\n".join(lines) + "\n").encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
