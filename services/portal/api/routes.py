"""The route table of the JSON API: each route declared once. It drives the router (here), the OpenAPI
document (openapi.py) and the tenant isolation test (tests/api), so a new route is covered by all three."""

from __future__ import annotations

from aiohttp import web

from services.portal.api import (
    api_keys,
    auth_endpoints,
    customers,
    nats_credentials,
    openapi,
    operations,
    s3_events,
    worksets,
)
from services.portal.api import models as m
from services.portal.api.middleware import ACCESS
from services.portal.api.registry import PREFIX, Aim, Route, Target
from stamen.worksets.rules import ValidationReport

SPEC_BODY = {"description": "A workset spec as JSON or YAML (schema: GET /api/v1/schema). The tenant comes "
             "from the credentials (operators: X-Stamen-Tenant).", "media": ("application/json", "application/yaml")}


def _header(t: Target) -> Aim:
    return Aim(headers={"X-Stamen-Tenant": t.tenant}, json={"name": "isolation-probe", "samples": []})


def _workset(t: Target) -> Aim:
    return Aim(path={"workset_id": t.workset_id})


def _customer(t: Target) -> Aim:
    return Aim(path={"customer_id": t.tenant})


ROUTES: tuple[Route, ...] = (
    # --- auth
    Route("POST", "/auth/register", auth_endpoints.register, "auth_register", "Register a user of a tenant",
          "auth", "principal", {201: m.RegisterResponse}, request=m.RegisterRequest, tenant_scoped=True,
          aim=lambda t: Aim(json={"email": "probe@lab.example", "password": "Probe-Pass-1234",
                                  "customer_id": t.tenant})),
    Route("POST", "/auth/confirm", auth_endpoints.confirm, "auth_confirm", "Confirm a registration with the "
          "mailed code", "auth", "public", {200: m.OkResponse}, request=m.ConfirmRequest),
    Route("POST", "/auth/login", auth_endpoints.login, "auth_login", "Sign in: Cognito tokens", "auth", "public",
          {200: m.TokensResponse}, request=m.LoginRequest),
    Route("POST", "/auth/logout", auth_endpoints.logout, "auth_logout", "Sign the calling user out everywhere",
          "auth", "principal", {200: m.OkResponse}),
    Route("POST", "/auth/forgot-password", auth_endpoints.forgot_password, "auth_forgot_password",
          "Mail a password reset code", "auth", "public", {200: m.CodeDeliveryResponse},
          request=m.ForgotPasswordRequest),
    Route("POST", "/auth/reset-password", auth_endpoints.reset_password, "auth_reset_password",
          "Set a new password with the reset code", "auth", "public", {200: m.OkResponse},
          request=m.ResetPasswordRequest),
    # --- customers
    Route("POST", "/customers", customers.create, "customers_create", "Onboard a customer (operators)",
          "customers", "operator", {200: m.CustomerCreated, 201: m.CustomerCreated}, request=m.CustomerCreate),
    Route("GET", "/customers", customers.list_customers, "customers_list", "Customers (a customer sees itself)",
          "customers", "principal", {200: m.CustomerList}, query=m.CustomerListQuery),
    Route("GET", "/customers/{customer_id}", customers.show, "customers_get", "One customer", "customers",
          "principal", {200: m.CustomerOut}, tenant_scoped=True, aim=_customer),
    Route("GET", "/customers/{customer_id}/usage", customers.usage, "customers_usage",
          "Monthly usage (?format=csv for CSV)", "customers", "principal", {200: m.UsageOut},
          query=m.UsageQuery, tenant_scoped=True, aim=_customer, media={200: "text/csv"}),
    # --- worksets
    Route("POST", "/worksets", worksets.submit, "worksets_create", "Submit a workset", "worksets", "principal",
          {200: m.SubmitResponse, 201: m.SubmitResponse}, body_schema=SPEC_BODY, tenant_scoped=True, aim=_header),
    Route("GET", "/worksets", worksets.list_worksets, "worksets_list", "Worksets, newest first (keyset pages)",
          "worksets", "principal", {200: m.WorksetList}, query=m.WorksetListQuery, tenant_scoped=True,
          aim=lambda t: Aim(query={"tenant": t.tenant})),
    Route("POST", "/worksets/validate", worksets.validate, "worksets_validate", "Validate a workset spec",
          "worksets", "principal", {200: ValidationReport}, body_schema=SPEC_BODY, query=m.ValidateQuery,
          tenant_scoped=True, aim=_header),
    Route("POST", "/worksets/generate-yaml", worksets.generate_yaml, "worksets_generate_yaml",
          "The spec as Daylily's three files", "worksets", "principal", {200: m.GenerateYamlResponse},
          body_schema=SPEC_BODY, tenant_scoped=True, aim=_header),
    Route("GET", "/worksets/{workset_id}", worksets.show, "worksets_get", "One workset with its history and "
          "diagnoses", "worksets", "principal", {200: m.WorksetDetail}, tenant_scoped=True, aim=_workset),
    Route("POST", "/worksets/{workset_id}/cancel", worksets.cancel, "worksets_cancel", "Cancel a workset",
          "worksets", "principal", {200: m.CancelResponse}, request=m.CancelRequest, tenant_scoped=True,
          aim=_workset),
    Route("POST", "/worksets/{workset_id}/retry", worksets.retry, "worksets_retry",
          "Requeue a failed or dead-lettered workset", "worksets", "principal", {200: m.WorksetStateResponse},
          tenant_scoped=True, aim=_workset),
    Route("POST", "/worksets/{workset_id}/archive", worksets.archive, "worksets_archive",
          "Archive a finished workset", "worksets", "principal", {200: m.WorksetStateResponse},
          tenant_scoped=True, aim=_workset),
    Route("GET", "/schema", worksets.schema, "worksets_schema", "JSON Schema of a workset spec", "worksets",
          "principal", {200: m.JsonDocument}),
    Route("POST", "/s3-events", s3_events.s3_events, "s3_events", "S3 event notifications (daylily.ready)",
          "worksets", "events", {200: m.S3EventsResponse}, body_schema={
              "description": "An S3 event notification, direct or wrapped by SNS.", "media": ("application/json",)}),
    # --- operations
    Route("GET", "/clusters", operations.list_clusters, "clusters_list", "Clusters and their load", "operations",
          "principal", {200: m.ClusterList}),
    Route("POST", "/clusters", operations.add_cluster, "clusters_add", "Add or update a cluster (operators)",
          "operations", "operator", {201: m.ClusterOut}, request=m.ClusterCreate),
    Route("POST", "/clusters/{name}/drain", operations.drain_cluster, "clusters_drain",
          "Take no new worksets on a cluster (operators)", "operations", "operator", {200: m.ClusterOut}),
    Route("GET", "/regions", operations.list_regions, "regions_list", "Known regions", "operations", "principal",
          {200: m.RegionList}),
    Route("GET", "/dlq", operations.list_dead_letters, "dlq_list", "The dead-letter queue (operators)",
          "operations", "operator", {200: m.DeadLetterList}, query=m.DeadLetterQuery),
    Route("GET", "/dlq/{workset_id}", operations.inspect_dead_letter, "dlq_inspect", "One dead letter with its "
          "workset (operators)", "operations", "operator", {200: m.DeadLetterDetail}),
    Route("POST", "/dlq/{workset_id}/requeue", operations.requeue_dead_letter, "dlq_requeue",
          "Requeue a dead letter (operators)", "operations", "operator", {200: m.WorksetStateResponse}),
    Route("DELETE", "/dlq/{workset_id}", operations.purge_dead_letter, "dlq_purge",
          "Purge a dead letter: the workset is archived (operators)", "operations", "operator",
          {200: m.WorksetStateResponse}),
    # --- API keys
    Route("POST", "/api-keys", api_keys.create, "api_keys_create", "Create an API key (shown once)", "api-keys",
          "principal", {201: m.ApiKeyCreated}, request=m.ApiKeyCreate, tenant_scoped=True,
          aim=lambda t: Aim(json={"name": "isolation-probe", "customer_id": t.tenant})),
    Route("GET", "/api-keys", api_keys.list_keys, "api_keys_list", "API keys of a tenant (no secrets)",
          "api-keys", "principal", {200: m.ApiKeyList}, query=m.TenantQuery, tenant_scoped=True,
          aim=lambda t: Aim(query={"tenant": t.tenant})),
    Route("DELETE", "/api-keys/{key_id}", api_keys.revoke, "api_keys_revoke", "Revoke an API key", "api-keys",
          "principal", {200: m.ApiKeyOut}, query=m.TenantQuery, tenant_scoped=True,
          aim=lambda t: Aim(path={"key_id": t.api_key_id}, query={"tenant": t.tenant})),
    # --- NATS credentials (lab systems publishing to stamen.intake.<tenant>)
    Route("POST", "/nats-credentials", nats_credentials.create, "nats_credentials_create",
          "Create a NATS credential (its seed is shown once)", "nats-credentials", "principal",
          {201: m.NatsCredentialCreated}, request=m.NatsCredentialCreate, tenant_scoped=True,
          aim=lambda t: Aim(json={"name": "isolation-probe", "customer_id": t.tenant})),
    Route("GET", "/nats-credentials", nats_credentials.list_credentials, "nats_credentials_list",
          "NATS credentials of a tenant (public keys only)", "nats-credentials", "principal",
          {200: m.NatsCredentialList}, query=m.TenantQuery, tenant_scoped=True,
          aim=lambda t: Aim(query={"tenant": t.tenant})),
    Route("DELETE", "/nats-credentials/{credential_id}", nats_credentials.revoke, "nats_credentials_revoke",
          "Revoke a NATS credential (nats-server drops its connections)", "nats-credentials", "principal",
          {200: m.NatsCredentialOut}, query=m.TenantQuery, tenant_scoped=True,
          aim=lambda t: Aim(path={"credential_id": t.nats_credential_id}, query={"tenant": t.tenant})),
)

# Served outside the table's JSON conventions: the document itself and its browsable page.
DOC_ROUTES = (("GET", "/openapi.json", openapi.openapi_json, "openapi_json"),
              ("GET", "/docs", openapi.docs_page, "openapi_docs"))


def setup_api_routes(app: web.Application) -> None:
    access = dict(app.get(ACCESS, {}))
    for route in ROUTES:
        app.router.add_route(route.method, route.full_path, route.handler, name=route.name)
        access[route.name] = route.access
    for method, path, handler, name in DOC_ROUTES:
        app.router.add_route(method, PREFIX + path, handler, name=name)
        access[name] = "public"
    app[ACCESS] = access
    app[openapi.ROUTE_TABLE] = ROUTES
