"""Who is calling: the result of authentication, and the tenant checks every route makes (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PrincipalKind = Literal["operator", "customer_user", "api_key"]

OPERATOR = "operator"
CUSTOMER = "customer"


@dataclass(frozen=True)
class Principal:
    """`customer_id` is the tenant a customer user or API key is scoped to; operators may have none."""

    kind: PrincipalKind
    subject: str  # Cognito `sub`, or the API key id
    customer_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    username: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    def can_access(self, tenant_id: str) -> bool:
        """Operators see every tenant; everyone else only their own."""
        return self.is_operator or (self.customer_id is not None and self.customer_id == tenant_id)

    def visible_tenant(self) -> str | None:
        """The tenant filter to apply to a listing: None (all) for operators."""
        return None if self.is_operator else self.customer_id

    @property
    def rate_limit_key(self) -> str:
        return f"{self.kind}:{self.subject}"


def local_demo_principal() -> Principal:
    """The principal every request gets when auth is turned off for a local demo."""
    return Principal(kind="operator", subject="local-demo", customer_id=None, roles=frozenset({OPERATOR}))
