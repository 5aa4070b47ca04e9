"""Moving a workset's files: stage inputs from S3 into the workdir, export results to S3.

    python -m stamen.pipelines.transfer stage --samples-json J --dest DIR --manifest FILE
    python -m stamen.pipelines.transfer export --source-dir DIR --export-uri s3://bucket/prefix/ [--receipt FILE]

The S3 client honours AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (e.g. moto or MinIO) and the usual AWS
credential variables. Inputs may also be local paths or file:// URIs (copied), for runs without S3.
Downloads go to a temporary name and are renamed when complete, so a partial file is never used.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import re
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import boto3
from botocore.exceptions import BotoCoreError, ClientError

_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


# Staged inputs and everything under a workset's folder belong to its tenant alone.
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class TransferError(RuntimeError):
    """A file could not be staged or exported; the message says which and why."""


def s3_client() -> Any:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint, region_name=region)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise TransferError(f"{uri!r} is not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def safe_file_name(text: str) -> str:
    return _UNSAFE_FILE_CHARS.sub("_", text) or "_"


def _fetch(uri: str, destination: Path, client: Any) -> None:
    temporary = destination.with_name(f".{destination.name}.partial")
    try:
        if uri.startswith("s3://"):
            bucket, key = split_s3_uri(uri)
            client.download_file(bucket, key, str(temporary))
        else:
            source = Path(unquote(urlparse(uri).path)) if uri.startswith("file://") else Path(uri)
            shutil.copyfile(source, temporary)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        why = "the object does not exist" if code in ("404", "NoSuchKey") else error.get("Message", str(exc))
        raise TransferError(f"cannot download {uri}: {why} (S3 error {code})") from exc
    except (BotoCoreError, OSError) as exc:
        raise TransferError(f"cannot fetch {uri}: {exc}") from exc
    os.chmod(
        temporary, PRIVATE_FILE
    )  # a tenant's reads: not for other users of the machine, whatever the umask
    os.replace(temporary, destination)


def stage_samples(samples: list[dict[str, Any]], dest: Path, client: Any | None = None) -> dict[str, Any]:
    """Fetch every sample's R1/R2 into `dest` (mode 0700, files 0600); returns the manifest: sample id ->
    local files."""
    dest.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(dest, PRIVATE_DIR)
    s3 = client if client is not None else s3_client()
    manifest: dict[str, Any] = {"staged_at": datetime.now(UTC).isoformat(), "samples": []}
    for sample in samples:
        sample_id = str(sample["id"])
        files: dict[str, str] = {}
        for read in ("r1", "r2"):
            uri = sample.get(read)
            if not uri:
                continue
            name = Path(urlparse(str(uri)).path).name or f"{read}.fastq"
            local = dest / f"{safe_file_name(sample_id)}_{read.upper()}_{safe_file_name(name)}"
            print(f"stage: {uri} -> {local}", flush=True)
            _fetch(str(uri), local, s3)
            files[read.upper()] = str(local)
        if not files:
            raise TransferError(f"sample {sample_id} has no r1/r2 to stage")
        manifest["samples"].append({"id": sample_id, "files": files})
    return manifest


def export_directory(source_dir: Path, export_uri: str, client: Any | None = None) -> list[str]:
    """Upload every file under `source_dir` to export_uri (s3://bucket/prefix/), keeping relative paths."""
    bucket, prefix = split_s3_uri(export_uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    files = sorted(path for path in source_dir.rglob("*") if path.is_file())
    if not files:
        raise TransferError(f"nothing to export: {source_dir} has no files")
    s3 = client if client is not None else s3_client()
    uploaded: list[str] = []
    for path in files:
        key = prefix + path.relative_to(source_dir).as_posix()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        print(f"export: {path} -> s3://{bucket}/{key}", flush=True)
        try:
            s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
        except (ClientError, BotoCoreError) as exc:
            raise TransferError(f"cannot upload {path} to s3://{bucket}/{key}: {exc}") from exc
        uploaded.append(f"s3://{bucket}/{key}")
    return uploaded


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def stage_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stage", description="Download every sample's R1/R2 into a folder.")
    parser.add_argument("--samples-json", required=True, help='[{"id": ..., "r1": uri, "r2": uri}, ...]')
    parser.add_argument("--dest", required=True, type=Path)
    parser.add_argument("--manifest", required=True, type=Path, help="where to write the staged files' list")
    args = parser.parse_args(argv)
    try:
        samples = json.loads(args.samples_json)
        manifest = stage_samples(samples, args.dest)
    except (TransferError, json.JSONDecodeError, KeyError, TypeError) as exc:
        print(f"stage: error: {exc}", file=sys.stderr)
        return 1
    _write_json(args.manifest, manifest)
    print(f"stage: {len(manifest['samples'])} samples staged; manifest {args.manifest}")
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="export", description="Upload a folder's files to s3://bucket/prefix/."
    )
    parser.add_argument("--source-dir", required=True, type=Path)
    parser.add_argument("--export-uri", required=True)
    parser.add_argument("--receipt", type=Path, help="write the list of uploaded URIs here (JSON)")
    args = parser.parse_args(argv)
    try:
        uploaded = export_directory(args.source_dir, args.export_uri)
    except TransferError as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 1
    if args.receipt:
        _write_json(args.receipt, {"exported_at": datetime.now(UTC).isoformat(), "uploaded": uploaded})
    print(f"export: {len(uploaded)} files uploaded to {args.export_uri}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    commands = {"stage": stage_main, "export": export_main}
    if not arguments or arguments[0] not in commands:
        print("usage: python -m stamen.pipelines.transfer {stage|export} ...", file=sys.stderr)
        return 2
    return commands[arguments[0]](arguments[1:])


if __name__ == "__main__":
    sys.exit(main())
