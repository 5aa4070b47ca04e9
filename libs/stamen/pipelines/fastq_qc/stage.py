"""fastq-qc step 1: download every sample's R1/R2 into the workdir (see stamen.pipelines.transfer)."""

from __future__ import annotations

import sys

from stamen.pipelines.transfer import stage_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
