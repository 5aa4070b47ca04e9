"""Workset intake at the edge: S3 storage checks, the Python validation API, the S3 drop watcher and
the document intake shared by HTTP and NATS. The pure core it feeds is `stamen.worksets`."""

from stamen.inputs.api import WorksetValidator
from stamen.inputs.objects import ObjectInfo, ObjectStore, S3ObjectStore, StorageError, open_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.inputs.storage import StorageChecker, StorageReport
from stamen.inputs.validation import validate_imported

__all__ = [
    "IntakeSettings",
    "ObjectInfo",
    "ObjectStore",
    "S3ObjectStore",
    "StorageChecker",
    "StorageError",
    "StorageReport",
    "WorksetValidator",
    "open_object_store",
    "validate_imported",
]
