"""What a handler asks of the request: who is calling, which tenant it may touch, its query and body."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from services.portal.api.errors import ApiError
from services.portal.api.requests import TENANT_HEADER, read_body
from services.portal.api.text import require_storable
from stamen.auth import Principal
from stamen.auth.errors import Forbidden, TokenMissing

PRINCIPAL = web.RequestKey("principal", Principal)
M = TypeVar("M", bound=BaseModel)


def principal_of(request: web.Request) -> Principal:
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:
        raise TokenMissing("authentication required")
    return principal


def actor_of(request: web.Request) -> str:
    p = principal_of(request)
    return f"{p.kind}:{p.username or p.subject}"


def require_operator(request: web.Request) -> Principal:
    principal = principal_of(request)
    if not principal.is_operator:
        raise Forbidden("operators only")
    return principal


def refuse_api_keys(request: web.Request, what: str) -> None:
    """Credentials are made by people: an API key may not create API keys or NATS credentials. Otherwise a
    key could outlive its own revocation through the credentials it minted (NATS credentials never expire)."""
    if principal_of(request).kind == "api_key":
        raise Forbidden(
            f"an API key cannot create {what}; a user of the tenant (or an operator) creates them, "
            "e.g. in the portal or with `stamen login` then `stamen api call`"
        )


def acting_tenant(request: web.Request) -> str | None:
    """An operator may act for one tenant with the X-Stamen-Tenant header; others are their tenant."""
    principal = principal_of(request)
    header = (request.headers.get(TENANT_HEADER) or "").strip() or None
    if principal.is_operator:
        return header
    return principal.customer_id


def tenant_not_found(tenant: str) -> ApiError:
    return ApiError(404, "CUSTOMER_NOT_FOUND", f"customer {tenant!r} does not exist", {"customer_id": tenant})


def can_see(request: web.Request, tenant_id: str) -> bool:
    """The one visibility rule: your tenant (operators: all, or the tenant they act for)."""
    principal = principal_of(request)
    if not principal.can_access(tenant_id):
        return False
    acting = acting_tenant(request) if principal.is_operator else None
    return acting is None or acting == tenant_id


def tenant_for(request: web.Request, requested: str | None) -> str:
    """The tenant a request names (or the caller's own); another tenant's is answered as not found."""
    principal = principal_of(request)
    tenant = requested or acting_tenant(request)
    if tenant is None:
        raise ApiError(400, "TENANT_REQUIRED", "operators must say which tenant (tenant / customer_id)")
    if not can_see(request, tenant):
        raise tenant_not_found(tenant)
    if principal.is_operator or tenant == principal.customer_id:
        return tenant
    raise tenant_not_found(tenant)


def visible_filter(request: web.Request, requested: str | None) -> str | None:
    """The tenant filter of a listing: the caller's own tenant, or what an operator asks for (None = all)."""
    principal = principal_of(request)
    if principal.is_operator:
        return requested or acting_tenant(request)
    if requested is not None and requested != principal.customer_id:
        raise tenant_not_found(requested)
    return principal.customer_id


def query(request: web.Request, model: type[M]) -> M:
    """The query as `model` (INVALID_PARAMETER), holding only text the database can store (TEXT_NOT_STORABLE)."""
    try:
        parsed = model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise ApiError(
            400, "INVALID_PARAMETER", "a query parameter is invalid", {"errors": _errors(exc)}
        ) from None
    require_storable(parsed, "query")
    return parsed


async def body(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    """The JSON body as `model` (REQUEST_INVALID), holding only storable text (TEXT_NOT_STORABLE)."""
    raw = await read_body(request)
    if optional and not raw.strip():
        return model()
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(
            400, "REQUEST_INVALID", "the request body is invalid", {"errors": _errors(exc)}
        ) from None
    require_storable(parsed, "body")
    return parsed


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def reply(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status, headers=headers)
