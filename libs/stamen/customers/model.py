"""Customers (tenants), pure: ids, resource names, bucket lifecycle and tags, the request and its checks.

A customer's id is its tenant id: it names NATS subjects, S3 prefixes and the rows of every table.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from stamen.customers.settings import CustomerSettings
from stamen.domain.workset import InvalidTenantId, check_tenant_id
from stamen.errors import CodedError

CustomerStatus = Literal["onboarding", "active", "suspended"]
# What an operator may set (onboarding is onboarding's own, until the customer's resources exist).
SETTABLE_STATUSES: tuple[CustomerStatus, ...] = ("active", "suspended")
ResourceKind = Literal["s3_bucket", "sns_topic", "cognito_user"]
ResourceState = Literal["pending", "created"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# AWS tag values: letters, digits, spaces and _ . : / = + - @ (at most 256 characters).
_TAG_VALUE = re.compile(r"^[\w .:/=+\-@]{0,256}$")
_BUCKET_UNSAFE = re.compile(r"[^a-z0-9-]+")
# How many worksets a tenant may run at once, at most: one range for onboarding (max_concurrent_worksets),
# `stamen tenant limit` and the API, since both name the same quota (customers and tenant_limits).
MAX_CONCURRENT_WORKSETS = 10_000


def concurrency_in_range(value: int) -> bool:
    return 0 <= value <= MAX_CONCURRENT_WORKSETS


def _storable(text: str) -> bool:
    """Text PostgreSQL can store and a person can read: no control characters (NUL is refused by the
    database) and no unpaired surrogates (not encodable as UTF-8)."""
    return not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


class CustomerError(CodedError):
    code = "CUSTOMER_ERROR"


class InvalidCustomer(CustomerError):
    code = "CUSTOMER_INVALID"


class NotConfigured(CustomerError):
    """No database to onboard into: neither DATABASE_URL nor a running embedded stack."""

    code = "CUSTOMER_NOT_CONFIGURED"


class CustomerNotFound(CustomerError):
    code = "CUSTOMER_NOT_FOUND"
    http_status = 404


class CustomerConflict(CustomerError):
    """The id is taken by a customer with different details; onboarding never overwrites one."""

    code = "CUSTOMER_CONFLICT"
    http_status = 409


class ResourceConflict(CustomerError):
    """A bucket/topic/user with the customer's name exists but onboarding did not create it."""

    code = "CUSTOMER_RESOURCE_CONFLICT"
    http_status = 409


class OnboardingFailed(CustomerError):
    """A step failed; everything this onboarding created was deleted again (see `details`)."""

    code = "CUSTOMER_ONBOARDING_FAILED"
    http_status = 502


class RollbackIncomplete(OnboardingFailed):
    """A step failed and some resources could not be deleted; they stay recorded for the next run."""

    code = "CUSTOMER_ROLLBACK_INCOMPLETE"


def customer_id_from_name(name: str) -> str:
    """`"Acme Genomics, Inc."` -> `"acme-genomics-inc"`: a valid tenant id, or InvalidCustomer."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:63].rstrip("-")
    if not slug:
        raise InvalidCustomer(f"cannot derive a customer id from the name {name!r}; pass customer_id")
    return slug


def bucket_name(customer_id: str, region: str, template: str = "stamen-{customer_id}-{region}") -> str:
    """S3 bucket name: lowercase letters, digits and '-', 3-63 characters; long names keep a hash."""
    raw = template.format(customer_id=customer_id, region=region).lower()
    name = _BUCKET_UNSAFE.sub("-", raw).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if len(name) > 63:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = name[:54].rstrip("-") + "-" + digest
    if len(name) < 3:
        name = (name + "-bkt")[:63]
    return name


def topic_name(customer_id: str, template: str = "stamen-{customer_id}-events") -> str:
    # Topic names allow letters, digits, '_' and '-': tenant ids already fit.
    return template.format(customer_id=customer_id)


@dataclass(frozen=True)
class NewCustomer:
    """What onboarding is asked for, checked."""

    customer_id: str
    customer_name: str
    email: str
    max_concurrent_worksets: int
    max_storage_gb: float
    billing_account_id: str | None = None
    cost_center: str | None = None

    @classmethod
    def create(
        cls,
        *,
        customer_name: str,
        email: str,
        max_concurrent_worksets: int,
        max_storage_gb: float,
        customer_id: str | None = None,
        billing_account_id: str | None = None,
        cost_center: str | None = None,
    ) -> NewCustomer:
        name = customer_name.strip()
        if not name or len(name) > 200:
            raise InvalidCustomer("customer_name must be 1-200 characters", field="customer_name")
        for label, text in (("customer_name", name), ("email", email)):
            if not _storable(text):
                raise InvalidCustomer(
                    f"{label} may not contain control characters or unpaired surrogates", field=label
                )
        try:
            cid = check_tenant_id(customer_id) if customer_id is not None else customer_id_from_name(name)
        except InvalidTenantId as exc:
            raise InvalidCustomer(str(exc), field="customer_id") from None
        mail = email.strip()
        if not _EMAIL.fullmatch(mail) or len(mail) > 254:
            raise InvalidCustomer(f"email {email!r} is not an email address", field="email")
        if not concurrency_in_range(max_concurrent_worksets):
            raise InvalidCustomer(
                f"max_concurrent_worksets must be 0-{MAX_CONCURRENT_WORKSETS}",
                field="max_concurrent_worksets",
            )
        if not (0 <= max_storage_gb <= 10_000_000):
            raise InvalidCustomer("max_storage_gb must be 0-10000000", field="max_storage_gb")
        for label, value in (("billing_account_id", billing_account_id), ("cost_center", cost_center)):
            if value is not None and not _TAG_VALUE.fullmatch(value):
                raise InvalidCustomer(
                    f"{label} may hold letters, digits, spaces and _ . : / = + - @ (at most 256)", field=label
                )
        return cls(
            customer_id=cid,
            customer_name=name,
            email=mail.lower(),
            max_concurrent_worksets=max_concurrent_worksets,
            max_storage_gb=float(max_storage_gb),
            billing_account_id=billing_account_id,
            cost_center=cost_center,
        )

    def differences(self, existing: Customer) -> dict[str, tuple[object, object]]:
        """Fields where an existing customer disagrees with this request (empty: the same customer)."""
        pairs: dict[str, tuple[object, object]] = {
            "customer_name": (existing.customer_name, self.customer_name),
            "email": (existing.email, self.email),
            "max_concurrent_worksets": (existing.max_concurrent_worksets, self.max_concurrent_worksets),
            "max_storage_gb": (existing.max_storage_gb, self.max_storage_gb),
            "billing_account_id": (existing.billing_account_id, self.billing_account_id),
            "cost_center": (existing.cost_center, self.cost_center),
        }
        return {k: v for k, v in pairs.items() if v[0] != v[1]}


@dataclass(frozen=True)
class Customer:
    customer_id: str
    customer_name: str
    email: str
    s3_bucket: str
    max_concurrent_worksets: int
    max_storage_gb: float
    region: str
    status: CustomerStatus
    created_at: datetime
    billing_account_id: str | None = None
    cost_center: str | None = None
    sns_topic_arn: str | None = None
    cognito_user_pool_id: str | None = None
    admin_username: str | None = None

    @property
    def tenant_id(self) -> str:
        return self.customer_id


@dataclass(frozen=True)
class CustomerResource:
    kind: ResourceKind
    name: str
    state: ResourceState
    arn: str | None = None


@dataclass(frozen=True)
class OnboardingResult:
    customer: Customer
    created: bool  # False: the customer already existed and nothing was made
    resources: tuple[CustomerResource, ...] = field(default_factory=tuple)


def cost_allocation_tags(customer: NewCustomer) -> dict[str, str]:
    """Tags on the bucket and topic; activate them as cost allocation tags in AWS Billing."""
    tags = {
        "stamen:customer-id": customer.customer_id,
        "stamen:managed-by": "stamen",
    }
    if customer.cost_center:
        tags["stamen:cost-center"] = customer.cost_center
    if customer.billing_account_id:
        tags["stamen:billing-account"] = customer.billing_account_id
    return tags


def lifecycle_rules(settings: CustomerSettings) -> list[dict[str, Any]]:
    """S3 lifecycle configuration (the `Rules` list of PutBucketLifecycleConfiguration)."""
    return [
        {
            "ID": "stamen-expire-intermediates",
            "Filter": {"Prefix": settings.intermediate_prefix},
            "Status": "Enabled",
            "Expiration": {"Days": settings.intermediate_expire_days},
        },
        {
            "ID": "stamen-results-infrequent-access",
            "Filter": {"Prefix": settings.results_prefix},
            "Status": "Enabled",
            "Transitions": [
                {"Days": settings.results_transition_days, "StorageClass": settings.results_storage_class}
            ],
        },
        {
            "ID": "stamen-noncurrent-versions",
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": settings.noncurrent_version_expire_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": settings.abort_multipart_days},
        },
    ]
