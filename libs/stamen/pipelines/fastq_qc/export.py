"""fastq-qc step 4: upload the report files to the spec's export_uri (see stamen.pipelines.transfer)."""

from __future__ import annotations

import sys

from stamen.pipelines.transfer import export_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
