"""The synchronous customer facade of the product brief: `CustomerManager(region=...).onboard_customer(...)`.

Wiring, not onboarding: it finds where to onboard into (its arguments, the environment, else the embedded
stack's `stack.json`, which only the stack layer reads), opens a pool and runs
stamen.customers.onboarding.AsyncCustomerManager with the settings it resolved. stamen.customers exports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from stamen.customers.model import Customer, NotConfigured, OnboardingResult
from stamen.customers.onboarding import AsyncCustomerManager
from stamen.customers.settings import CustomerSettings
from stamen.store.db import create_pool

T = TypeVar("T")


class CustomerManager:
    """Synchronous facade: `CustomerManager(region="us-west-2").onboard_customer(customer_name=..., ...)`.

    Where it onboards into, first found wins: the arguments; DATABASE_URL and AWS_ENDPOINT_URL (and the
    STAMEN_ settings); else the embedded stack that `stamen up` runs in the state folder (`stack.json` in
    STAMEN_STATE_DIR, default `.stamen`), as the `stamen` commands do. Inside a running event loop use
    `AsyncCustomerManager` instead.
    """

    def __init__(
        self,
        region: str | None = None,
        *,
        database_url: str | None = None,
        aws_endpoint_url: str | None = None,
        settings: CustomerSettings | None = None,
        state_dir: Path | None = None,
    ) -> None:
        base = settings or CustomerSettings()
        updates = {
            k: v
            for k, v in {
                "region": region,
                "database_url": database_url,
                "aws_endpoint_url": aws_endpoint_url,
            }.items()
            if v is not None
        }
        self.settings = base.model_copy(update=updates)
        self.state_dir = state_dir

    def resolved_settings(self) -> CustomerSettings:
        """The settings with the running embedded stack's endpoints filled in when no database is set.

        Read at each call, so a stack started after the manager was made is found."""
        if self.settings.database_url:
            return self.settings
        from stamen.settings import Settings
        from stamen.stack.launcher import STACK_FILE, read_stack_file

        folder = (self.state_dir or Settings().state_dir).resolve()
        stack = read_stack_file(folder)
        if not stack or not stack.get("launcher_pid") or not stack.get("database_url"):
            raise NotConfigured(
                "no database to onboard into: set DATABASE_URL (and AWS_ENDPOINT_URL when AWS is an "
                "emulator), or pass CustomerManager(database_url=..., aws_endpoint_url=...), or start the "
                f"embedded stack with `stamen up` (no running stack in {folder / STACK_FILE}; set "
                "STAMEN_STATE_DIR or state_dir= to the folder it runs in)",
                state_dir=str(folder),
            )
        updates: dict[str, Any] = {"database_url": str(stack["database_url"])}
        if "moto" in stack.get("embedded", []) and not self.settings.aws_endpoint_url:
            # The stack's services use its moto; so does onboarding, with dummy credentials (real ones must
            # never be sent to an emulator) and a user pool it may create, as `stamen customer add` does.
            updates |= {"aws_endpoint_url": str(stack["aws_endpoint_url"]), "aws_emulator_credentials": True}
            if "cognito_create_pool" not in self.settings.model_fields_set:  # unless said otherwise
                updates["cognito_create_pool"] = True
        return self.settings.model_copy(update=updates)

    def _run(self, action: Callable[[AsyncCustomerManager], Awaitable[T]]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "CustomerManager is synchronous; inside an event loop use AsyncCustomerManager"
            )
        settings = self.resolved_settings()
        url = settings.database_url
        assert url is not None  # resolved_settings raises otherwise

        async def main() -> T:
            pool = await create_pool(url, min_size=1, max_size=4)
            try:
                return await action(AsyncCustomerManager(pool, settings))
            finally:
                await pool.close()

        return asyncio.run(main())

    def onboard_customer(
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
        return self._run(
            lambda m: m.onboard_customer(
                customer_name=customer_name,
                email=email,
                max_concurrent_worksets=max_concurrent_worksets,
                max_storage_gb=max_storage_gb,
                customer_id=customer_id,
                billing_account_id=billing_account_id,
                cost_center=cost_center,
                admin_temporary_password=admin_temporary_password,
            )
        )

    def get_customer(self, customer_id: str) -> Customer:
        return self._run(lambda m: m.get_customer(customer_id))

    def list_customers(self, *, status: str | None = None) -> list[Customer]:
        return self._run(lambda m: m.list_customers(status=status))
