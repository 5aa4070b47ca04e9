"""The route table's vocabulary: each API route is declared once (method, path, models, access, tenant
scope) and that one declaration drives the router, the OpenAPI document and the isolation test."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

PREFIX = "/api/v1"
# public: no credentials. principal: any authenticated caller. operator: operators only.
# events: the S3 event endpoint (shared secret header, or an operator).
Access = Literal["public", "principal", "operator", "events"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PARAM = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class Target:
    """Resources of one tenant that a route can be aimed at (the isolation test builds these)."""

    tenant: str
    workset_id: str
    dead_letter_id: str
    api_key_id: str
    nats_credential_id: str


@dataclass(frozen=True)
class Aim:
    path: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # under PREFIX
    handler: Handler
    name: str  # also the OpenAPI operationId
    summary: str
    tag: str
    access: Access
    responses: Mapping[int, type[BaseModel] | None]  # success statuses; errors are ErrorBody
    request: type[BaseModel] | None = None  # JSON body
    body_required: bool = True  # False: the request model's defaults stand in for an empty body
    body_schema: Mapping[str, Any] | None = None  # a body that is not a model (e.g. JSON or YAML spec)
    query: type[BaseModel] | None = None
    tenant_scoped: bool = False
    aim: Callable[[Target], Aim] | None = None  # how to point the route at a tenant's resources
    description: str = ""
    media: Mapping[int, str] = field(default_factory=dict)  # non-JSON success bodies, e.g. text/csv

    def __post_init__(self) -> None:
        if self.tenant_scoped and self.aim is None:
            raise ValueError(f"tenant-scoped route {self.name} must say how to aim it at a tenant (aim=)")

    @property
    def full_path(self) -> str:
        return PREFIX + self.path

    @property
    def path_params(self) -> list[str]:
        return _PARAM.findall(self.path)

    def url(self, aim: Aim) -> str:
        return PREFIX + _PARAM.sub(lambda m: aim.path[m.group(1)], self.path)
