"""Customer onboarding: bucket -> topic -> Cognito admin user -> row (+ tenant limit + customer.created).

- Idempotent: onboarding an existing customer with the same details returns it and makes nothing; with
  other details it is refused (CUSTOMER_CONFLICT).
- Recoverable: the row is written first in state `onboarding`; every cloud resource is recorded before it
  is created (`pending`) and after (`created`). A run that crashed half-way is resumed by the next call
  (recorded resources are adopted) or undone by `abandon_onboarding`.
- Rolled back: when a step fails, everything recorded is deleted in reverse order, then the row; the
  error is CUSTOMER_ONBOARDING_FAILED with the cause (or CUSTOMER_ROLLBACK_INCOMPLETE, listing what could
  not be deleted, which stays recorded for the next attempt).
- Published: the activation, the scheduler's tenant limit and the `customer.created` event commit in one
  transaction (the outbox).

`AsyncCustomerManager` does the work with the pool and settings it is given. `CustomerManager`, the
synchronous facade of the product brief, is wiring that finds where to onboard into (arguments, environment,
the running embedded stack's file): it lives with the stack, in stamen.stack.customers.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from botocore.exceptions import ClientError

from stamen.auth import cognito
from stamen.auth.errors import IdentityRequestInvalid
from stamen.customers import cloud
from stamen.customers.cloud import AwsClients, open_clients
from stamen.customers.model import (
    SETTABLE_STATUSES,
    Customer,
    CustomerConflict,
    CustomerNotFound,
    CustomerResource,
    InvalidCustomer,
    NewCustomer,
    OnboardingFailed,
    OnboardingResult,
    ResourceConflict,
    RollbackIncomplete,
    bucket_name,
    cost_allocation_tags,
    lifecycle_rules,
    topic_name,
)
from stamen.customers.repository import CustomerRepository
from stamen.customers.settings import CustomerSettings
from stamen.events.envelope import new_envelope
from stamen.events.types import CustomerCreated
from stamen.store.unit_of_work import UnitOfWork

_USER_ARN_PREFIX = "cognito-userpool/"


def _cause(exc: Exception) -> str:
    """A stable name for what failed: our error code, AWS's error code, else the exception type."""
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return code
    if isinstance(exc, ClientError):
        return cognito.aws_code(exc) or type(exc).__name__
    return type(exc).__name__


class AsyncCustomerManager:
    def __init__(self, pool: asyncpg.Pool, settings: CustomerSettings | None = None) -> None:
        self._pool = pool
        self.settings = settings or CustomerSettings()

    # --- queries --------------------------------------------------------------------------------
    async def get_customer(self, customer_id: str) -> Customer:
        async with self._pool.acquire() as conn:
            customer = await CustomerRepository(conn).get(customer_id)
        if customer is None:
            raise CustomerNotFound(f"customer {customer_id} does not exist", customer_id=customer_id)
        return customer

    async def list_customers(
        self, *, status: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[Customer]:
        async with self._pool.acquire() as conn:
            return await CustomerRepository(conn).page(status=status, after=after, limit=limit)

    async def resources(self, customer_id: str) -> list[CustomerResource]:
        async with self._pool.acquire() as conn:
            return await CustomerRepository(conn).resources(customer_id)

    # --- onboarding -----------------------------------------------------------------------------
    async def onboard_customer(
        self,
        *,
        customer_name: str,
        email: str,
        max_concurrent_worksets: int | None = None,
        max_storage_gb: float | None = None,
        customer_id: str | None = None,
        billing_account_id: str | None = None,
        cost_center: str | None = None,
        admin_temporary_password: str | None = None,
    ) -> OnboardingResult:
        s = self.settings
        new = NewCustomer.create(
            customer_name=customer_name,
            email=email,
            max_concurrent_worksets=(
                s.default_max_concurrent_worksets
                if max_concurrent_worksets is None
                else max_concurrent_worksets
            ),
            max_storage_gb=s.default_max_storage_gb if max_storage_gb is None else max_storage_gb,
            customer_id=customer_id,
            billing_account_id=billing_account_id,
            cost_center=cost_center,
        )
        # One onboarding per customer at a time, across processes: the second waits, then finds the first's
        # result (or its rollback) and acts on that.
        async with self._pool.acquire() as lock_conn:
            locks = CustomerRepository(lock_conn)
            await locks.lock(new.customer_id)
            try:
                return await self._onboard(new, admin_temporary_password)
            finally:
                await locks.unlock(new.customer_id)

    async def _onboard(self, new: NewCustomer, temporary_password: str | None) -> OnboardingResult:
        s = self.settings
        cid = new.customer_id
        bucket = bucket_name(cid, s.region, s.customer_bucket_template)
        async with self._pool.acquire() as conn:
            repo = CustomerRepository(conn)
            existing = await repo.get(cid)
            if existing is not None:
                differences = new.differences(existing)
                if differences:
                    raise CustomerConflict(
                        f"customer {cid} exists with other details",
                        customer_id=cid,
                        differences={k: {"existing": a, "requested": b} for k, (a, b) in differences.items()},
                    )
                if existing.status != "onboarding":
                    return OnboardingResult(
                        existing, created=False, resources=tuple(await repo.resources(cid))
                    )
                # else: an earlier run stopped half-way; resume it with what it recorded.
            else:
                holder = await repo.find_by_bucket(bucket)
                if holder is not None:
                    raise ResourceConflict(
                        f"bucket {bucket} already belongs to customer {holder.customer_id}"
                    )
                await repo.insert_onboarding(new, s3_bucket=bucket, region=s.region)

        async with open_clients(s) as aws:
            pool_id: str | None = None
            try:
                user_pool = await cognito.ensure_user_pool(
                    aws.cognito,
                    name=s.cognito_user_pool_name,
                    operator_group=s.cognito_operator_group,
                    create=s.cognito_create_pool,
                    user_pool_id=s.cognito_user_pool_id,
                )
                pool_id = user_pool.user_pool_id
                await self._step_bucket(aws, new, bucket)
                topic_arn = await self._step_topic(aws, new)
                username = await self._step_admin_user(aws, new, pool_id, temporary_password)
                customer = await self._step_activate(new, topic_arn, pool_id, username)
            except Exception as exc:
                failures = await self._rollback(aws, cid)
                cause = _cause(exc)
                details: dict[str, Any] = {"customer_id": cid, "cause": cause, "error": str(exc)}
                if failures:
                    raise RollbackIncomplete(
                        f"onboarding {cid} failed ({cause}) and rollback left resources: {'; '.join(failures)}",
                        left_behind=failures,
                        **details,
                    ) from exc
                if isinstance(exc, IdentityRequestInvalid):
                    # Cognito refused our input (e.g. an address it does not take as a username): the
                    # request is at fault, not AWS, so it is answered as invalid, like the checks above.
                    raise InvalidCustomer(
                        f"onboarding {cid} was refused and rolled back: {exc}", **details
                    ) from exc
                raise OnboardingFailed(
                    f"onboarding {cid} failed and was rolled back: {exc}", **details
                ) from exc
        async with self._pool.acquire() as conn:
            resources = tuple(await CustomerRepository(conn).resources(cid))
        return OnboardingResult(customer, created=True, resources=resources)

    async def _recorded(self, customer_id: str) -> dict[str, CustomerResource]:
        async with self._pool.acquire() as conn:
            return {r.kind: r for r in await CustomerRepository(conn).resources(customer_id)}

    async def _record(
        self, customer_id: str, kind: Any, name: str, *, state: str, arn: str | None = None
    ) -> None:
        async with self._pool.acquire() as conn:
            await CustomerRepository(conn).record_resource(customer_id, kind, name, state=state, arn=arn)

    async def _step_bucket(self, aws: AwsClients, new: NewCustomer, bucket: str) -> None:
        s = self.settings
        if "s3_bucket" not in await self._recorded(new.customer_id):
            if await cloud.bucket_exists(aws.s3, bucket):
                raise ResourceConflict(
                    f"bucket {bucket} exists and was not created by stamen for {new.customer_id}"
                )
            await self._record(new.customer_id, "s3_bucket", bucket, state="pending")
        await cloud.create_bucket(aws.s3, bucket, region=s.region)
        await cloud.configure_bucket(
            aws.s3, bucket, tags=cost_allocation_tags(new), lifecycle_rules=lifecycle_rules(s)
        )
        await self._record(
            new.customer_id, "s3_bucket", bucket, state="created", arn=f"arn:aws:s3:::{bucket}"
        )

    async def _step_topic(self, aws: AwsClients, new: NewCustomer) -> str:
        name = topic_name(new.customer_id, self.settings.customer_topic_template)
        if "sns_topic" not in await self._recorded(new.customer_id):
            if await cloud.find_topic(aws.sns, name) is not None:
                raise ResourceConflict(
                    f"SNS topic {name} exists and was not created by stamen for {new.customer_id}"
                )
            await self._record(new.customer_id, "sns_topic", name, state="pending")
        arn = await cloud.create_topic(aws.sns, name, tags=cost_allocation_tags(new))
        await self._record(new.customer_id, "sns_topic", name, state="created", arn=arn)
        return arn

    async def _step_admin_user(
        self, aws: AwsClients, new: NewCustomer, pool_id: str, temporary_password: str | None
    ) -> str:
        username = new.email
        recorded = "cognito_user" in await self._recorded(new.customer_id)
        exists = await cognito.user_exists(aws.cognito, user_pool_id=pool_id, username=username)
        if exists and not recorded:
            raise ResourceConflict(
                f"Cognito user {username} exists and was not created by stamen for {new.customer_id}"
            )
        await self._record(
            new.customer_id, "cognito_user", username, state="pending", arn=_USER_ARN_PREFIX + pool_id
        )
        if not exists:
            await cognito.create_customer_admin(
                aws.cognito,
                user_pool_id=pool_id,
                email=username,
                customer_id=new.customer_id,
                temporary_password=temporary_password,
            )
        await self._record(
            new.customer_id, "cognito_user", username, state="created", arn=_USER_ARN_PREFIX + pool_id
        )
        return username

    async def _step_activate(self, new: NewCustomer, topic_arn: str, pool_id: str, username: str) -> Customer:
        async with UnitOfWork(self._pool) as uow:
            repo = CustomerRepository(uow.connection)
            customer = await repo.activate(
                new.customer_id,
                sns_topic_arn=topic_arn,
                cognito_user_pool_id=pool_id,
                admin_username=username,
            )
            await repo.set_tenant_limit(new.customer_id, new.max_concurrent_worksets)
            uow.publish(
                new_envelope(
                    CustomerCreated(
                        customer_id=new.customer_id, customer_name=new.customer_name, email=new.email
                    ),
                    tenant_id=new.customer_id,
                    region=self.settings.region,
                )
            )
            await uow.commit()
        return customer

    async def _rollback(self, aws: AwsClients, customer_id: str) -> list[str]:
        """Delete every recorded resource, newest first; then the row. Returns what could not be deleted."""
        async with self._pool.acquire() as conn:
            repo = CustomerRepository(conn)
            failures: list[str] = []
            for resource in reversed(await repo.resources(customer_id)):
                try:
                    if resource.kind == "cognito_user":
                        pool_id = (resource.arn or "").removeprefix(_USER_ARN_PREFIX)
                        await cognito.delete_user(aws.cognito, user_pool_id=pool_id, username=resource.name)
                    elif resource.kind == "sns_topic":
                        arn = resource.arn or await cloud.find_topic(aws.sns, resource.name)
                        if arn:
                            await cloud.delete_topic(aws.sns, arn)
                    elif resource.kind == "s3_bucket":
                        await cloud.delete_bucket(aws.s3, resource.name)
                    await repo.forget_resource(customer_id, resource.kind)
                except Exception as exc:
                    failures.append(f"{resource.kind} {resource.name}: {exc}")
            if not failures:
                await repo.delete(customer_id)
            return failures

    async def abandon_onboarding(self, customer_id: str) -> None:
        """Undo an onboarding that stopped half-way (process killed): delete its resources and row."""
        customer = await self.get_customer(customer_id)
        if customer.status != "onboarding":
            raise CustomerConflict(f"customer {customer_id} is {customer.status}, not onboarding")
        async with self._pool.acquire() as lock_conn:
            locks = CustomerRepository(lock_conn)
            await locks.lock(customer_id)
            try:
                async with open_clients(self.settings) as aws:
                    failures = await self._rollback(aws, customer_id)
            finally:
                await locks.unlock(customer_id)
        if failures:
            raise RollbackIncomplete(f"could not delete: {'; '.join(failures)}", left_behind=failures)

    async def set_status(self, customer_id: str, status: str) -> Customer:
        """Suspend or re-activate a customer (API keys of a suspended customer stop working)."""
        if status not in SETTABLE_STATUSES:
            raise ValueError(f"status must be {' or '.join(SETTABLE_STATUSES)}")
        async with self._pool.acquire() as conn:
            customer = await CustomerRepository(conn).set_status(customer_id, status)
        if customer is None:
            raise CustomerNotFound(f"customer {customer_id} does not exist", customer_id=customer_id)
        return customer
