"""Customers (tenants): onboarding with rollback, quotas, usage. See docs/customers-and-auth.md."""

from stamen.customers.bucket_usage import BucketUsageCache, StorageNotMeasured
from stamen.customers.model import (
    Customer,
    CustomerConflict,
    CustomerError,
    CustomerNotFound,
    InvalidCustomer,
    NewCustomer,
    NotConfigured,
    OnboardingFailed,
    OnboardingResult,
    ResourceConflict,
    RollbackIncomplete,
)
from stamen.customers.onboarding import AsyncCustomerManager
from stamen.customers.settings import CustomerSettings
from stamen.customers.usage import (
    Month,
    StorageQuotaExceeded,
    UsageReport,
    check_customer_storage,
    check_storage_quota,
    monthly_usage,
    to_csv,
)

# The product brief's synchronous facade, exported here under its documented name. It is wiring (it reads
# the running stack's file to find the database), so it lives in the stack layer; nothing in this package
# uses it.
from stamen.stack.customers import CustomerManager

__all__ = [
    "AsyncCustomerManager",
    "BucketUsageCache",
    "Customer",
    "CustomerConflict",
    "CustomerError",
    "CustomerManager",
    "CustomerNotFound",
    "CustomerSettings",
    "InvalidCustomer",
    "Month",
    "NewCustomer",
    "NotConfigured",
    "OnboardingFailed",
    "OnboardingResult",
    "ResourceConflict",
    "RollbackIncomplete",
    "StorageNotMeasured",
    "StorageQuotaExceeded",
    "UsageReport",
    "check_customer_storage",
    "check_storage_quota",
    "monthly_usage",
    "to_csv",
]
