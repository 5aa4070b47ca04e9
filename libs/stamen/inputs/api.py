"""The Python API for scripts, as the product brief promised it:

    from stamen.inputs import WorksetValidator
    report = WorksetValidator(region="us-west-2").validate_workset(bucket="lab-bucket",
                                                                   prefix="daylily_monitoring/active_worksets/run7")
    print(report.ok, report.estimate.cost_usd_median if report.estimate else None)

Without `tenant=`, a folder is validated as the S3 drop watcher would take it: the tenant is the
bucket's in STAMEN_DROP_BUCKETS (`bucket=tenant`), else daylily_info.yaml's `customer_id`, else
`IntakeSettings.drop_default_tenant` (STAMEN_DROP_DEFAULT_TENANT).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from stamen.inputs.folders import folder_name, import_documents, read_s3_folder
from stamen.inputs.objects import StorageError, open_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.inputs.storage import StorageChecker
from stamen.inputs.submission import import_for_tenant
from stamen.inputs.validation import validate_imported
from stamen.settings import Settings
from stamen.worksets import ImportResult, ValidationReport
from stamen.worksets.findings import finding


class WorksetValidator:
    """Validate worksets (findings + cost estimate) from scripts.

    `region` is where the workset would run: the cluster region of the estimate and the region of the S3
    client. The S3 endpoint and credentials come from the environment (AWS_ENDPOINT_URL, the usual AWS
    variables or profile), as for every stamen component."""

    def __init__(
        self,
        region: str | None = None,
        *,
        settings: Settings | None = None,
        intake: IntakeSettings | None = None,
        strict: bool = False,
    ) -> None:
        self.settings = settings or Settings()
        self.region = region or self.settings.region
        self.intake = intake or IntakeSettings()
        self.strict = strict

    def validate_workset(
        self,
        *,
        bucket: str,
        prefix: str,
        dry_run: bool = False,
        tenant: str | None = None,
        strict: bool | None = None,
    ) -> ValidationReport:
        """Blocking variant for scripts; inside a running event loop use `validate_workset_async`."""
        return asyncio.run(
            self.validate_workset_async(
                bucket=bucket, prefix=prefix, dry_run=dry_run, tenant=tenant, strict=strict
            )
        )

    async def validate_workset_async(
        self,
        *,
        bucket: str,
        prefix: str,
        dry_run: bool = False,
        tenant: str | None = None,
        strict: bool | None = None,
        emulator: bool = False,
    ) -> ValidationReport:
        """Validate the Daylily workset folder s3://bucket/prefix/.

        The folder's files are always read (there is nothing to validate otherwise); `dry_run` skips
        every other storage access: input objects, reference files, bucket regions. `tenant` None: the
        bucket's mapped tenant, else the folder's customer_id, else the drop default tenant, as the S3 drop
        watcher decides it."""
        strict = self.strict if strict is None else strict
        async with open_object_store(
            self.settings, self.intake, region=self.region, emulator=emulator
        ) as store:
            try:
                docs = await read_s3_folder(store, bucket, prefix)
            except StorageError as exc:
                imported = ImportResult(spec=None, findings=[finding(exc.code, "", f"workset folder: {exc}")])
            else:
                owner = tenant or self.intake.drop_tenant(bucket, docs.info)
                imported = import_documents(docs, tenant=owner, default_name=folder_name(prefix))
            checker = StorageChecker(store, self.intake)
            return await validate_imported(
                imported,
                checker=checker,
                cluster_region=self.region,
                rights=None,
                strict=strict,
                dry_run=dry_run,
            )

    async def validate_document_async(
        self,
        document: bytes | str | Mapping[str, object],
        *,
        tenant: str | None = None,
        dry_run: bool = False,
        strict: bool | None = None,
    ) -> ValidationReport:
        """Validate a portal/API form document (JSON or YAML text, or a mapping)."""
        strict = self.strict if strict is None else strict
        imported = import_for_tenant(document, tenant=tenant)
        if dry_run:
            return await validate_imported(
                imported, checker=None, cluster_region=self.region, rights=None, strict=strict, dry_run=True
            )
        async with open_object_store(self.settings, self.intake, region=self.region) as store:
            return await validate_imported(
                imported,
                checker=StorageChecker(store, self.intake),
                cluster_region=self.region,
                rights=None,
                strict=strict,
            )
