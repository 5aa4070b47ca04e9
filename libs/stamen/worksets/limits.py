"""How large a workset may be: one definition, used by every intake path (HTTP API, NATS request/reply,
S3 drops and local folders, the CLI) and by the embedded nats-server's configuration.

The largest workset has MAX_SAMPLES sample units. Its document fits the byte limits with room to spare:
10,000 samples with long S3 URIs are ~4 MiB of JSON or YAML, and 10,000 rows of Daylily's widest real
manifest (hybrid_ilmn_ont, ~1 KB a row) are ~10 MB of TSV. Events never carry the document (claim check,
stamen.events.types), so these sizes reach PostgreSQL and the validator, never the event stream.
"""

from __future__ import annotations

MAX_SAMPLES = 10_000
# A workset document: the JSON/YAML spec (API body, NATS request, `stamen submit`), daylily_work.yaml and
# daylily_info.yaml (whose sample_ids grow with the workset).
MAX_DOCUMENT_BYTES = 6 * 1024 * 1024
# A Daylily sample manifest (S3 drops and local folders only: it never travels through the API or NATS).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# nats-server's max_payload for stamen's own servers (embedded and compose): a NATS intake request holds the
# largest document plus its headers. nats-server's default is 1 MiB; it advises against more than 8 MiB.
NATS_MAX_PAYLOAD = 8 * 1024 * 1024
