"""The OpenAPI 3.1 document, generated from the route table and the pydantic models, and a self-contained
page that renders it (no CDN: the page is plain HTML and a little script reading /api/v1/openapi.json)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from services.portal.api.models import ErrorBody
from services.portal.api.registry import Route

ROUTE_TABLE = web.AppKey("route_table", tuple[Route, ...])
REF = "#/components/schemas/{model}"
Mode = Literal["validation", "serialization"]


def _components(routes: Sequence[Route]) -> tuple[dict[tuple[type[BaseModel], Mode], Any], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], Mode]] = [(ErrorBody, "serialization")]
    for r in routes:
        if r.request is not None:
            wanted.append((r.request, "validation"))
        wanted += [(model, "serialization") for model in r.responses.values() if model is not None]
    unique = list(dict.fromkeys(wanted))
    refs, doc = models_json_schema(unique, ref_template=REF)
    return {key: refs[key] for key in unique}, doc.get("$defs", {})


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {k: v for k, v in prop.items() if k != "title"},
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def build_document(
    routes: Sequence[Route], *, title: str = "stamen API", version: str = "1"
) -> dict[str, Any]:
    refs, schemas = _components(routes)
    error = {
        "description": "Error: {code, message, details}; codes in docs/api.md",
        "content": {"application/json": {"schema": refs[(ErrorBody, "serialization")]}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {"operationId": r.name, "summary": r.summary, "tags": [r.tag]}
        if r.description:
            op["description"] = r.description
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for p in r.path_params
        ]
        if r.query is not None:
            params += _query_parameters(r.query)
        if params:
            op["parameters"] = params
        if r.request is not None:
            op["requestBody"] = {
                "required": r.body_required,
                "content": {"application/json": {"schema": refs[(r.request, "validation")]}},
            }
        elif r.body_schema is not None:
            op["requestBody"] = {
                "required": True,
                "description": r.body_schema["description"],
                "content": {
                    media: {"schema": {"type": "object"} if "json" in media else {"type": "string"}}
                    for media in r.body_schema["media"]
                },
            }
        responses: dict[str, Any] = {}
        for status, model in r.responses.items():
            content: dict[str, Any] = {}
            if model is not None:
                content["application/json"] = {"schema": refs[(model, "serialization")]}
            if status in r.media:
                content[r.media[status]] = {"schema": {"type": "string"}}
            responses[str(status)] = {"description": "OK", "content": content}
        responses["default"] = error
        op["responses"] = responses
        op["security"] = (
            []
            if r.access == "public"
            else (
                [{"eventsSecret": []}, {"bearer": []}, {"apiKey": []}]
                if r.access == "events"
                else [{"bearer": []}, {"apiKey": []}]
            )
        )
        if r.access == "operator":
            op["x-stamen-operator-only"] = True
        if r.tenant_scoped:
            op["x-stamen-tenant-scoped"] = True
        paths.setdefault(r.full_path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "stamen's REST API. Errors are JSON "
            "{code, message, details}. Another tenant's resources answer 404. See docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Cognito id/access token, or an API key (stm_...)",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "eventsSecret": {"type": "apiKey", "in": "header", "name": "X-Stamen-Events-Secret"},
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    routes = request.app[ROUTE_TABLE]
    return web.json_response(build_document(routes))


async def docs_page(_: web.Request) -> web.Response:
    page = resources.files("services.portal.web").joinpath("templates/api_docs.html").read_text()
    return web.Response(text=page, content_type="text/html")
