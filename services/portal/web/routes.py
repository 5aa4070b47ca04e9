"""The page table: every page declared once with who may open it (public, any signed-in user, operators).
The guard (guard.py) enforces the access level; what a page then shows is scoped by the API's rules."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from services.portal.api.registry import Handler
from services.portal.web import live
from services.portal.web.assets import STATIC_PREFIX, static_file
from services.portal.web.guard import PAGE_ACCESS, PageAccess
from services.portal.web.views import (
    auth,
    dashboard,
    detail,
    files,
    generator,
    operator,
    settings,
    submit,
    theme,
    usage,
    worksets,
)


@dataclass(frozen=True)
class Page:
    method: str
    path: str
    handler: Handler
    name: str
    access: PageAccess = "user"


PAGES: tuple[Page, ...] = (
    # --- signing in and out
    Page("GET", "/signin", auth.sign_in_form, "signin", "public"),
    Page("POST", "/signin", auth.sign_in, "signin_submit", "public"),
    Page("POST", "/signin/new-password", auth.new_password, "signin_new_password", "public"),
    Page("POST", "/signout", auth.sign_out, "signout", "public"),
    Page("GET", "/signup", auth.sign_up_form, "signup", "public"),
    Page("POST", "/signup", auth.sign_up, "signup_submit", "public"),
    Page("GET", "/signup/confirm", auth.confirm_form, "signup_confirm", "public"),
    Page("POST", "/signup/confirm", auth.confirm, "signup_confirm_submit", "public"),
    Page("GET", "/forgot", auth.forgot_form, "forgot", "public"),
    Page("POST", "/forgot", auth.forgot, "forgot_submit", "public"),
    Page("POST", "/reset", auth.reset, "reset_submit", "public"),
    Page("POST", "/theme", theme.set_theme, "theme", "public"),
    # --- live events
    Page("GET", "/live", live.events, "live"),
    # --- customer pages
    Page("GET", "/", dashboard.page, "dashboard"),
    Page("GET", "/worksets", worksets.list_page, "worksets"),
    Page("POST", "/worksets/bulk", worksets.bulk, "worksets_bulk"),
    Page("GET", "/worksets/new", submit.form, "workset_new"),
    Page("POST", "/worksets/new", submit.submit, "workset_new_submit"),
    Page("POST", "/worksets/new/check", submit.check, "workset_new_check"),
    Page("POST", "/worksets/new/manifest", submit.manifest, "workset_new_manifest"),
    Page("POST", "/uploads/presign", files.presign, "upload_presign"),
    Page("GET", "/worksets/{workset_id}", detail.page, "workset"),
    Page("GET", "/worksets/{workset_id}/row", worksets.row, "workset_row"),
    Page("POST", "/worksets/{workset_id}/cancel", detail.cancel, "workset_cancel"),
    Page("POST", "/worksets/{workset_id}/retry", detail.retry, "workset_retry"),
    Page("POST", "/worksets/{workset_id}/archive", detail.archive, "workset_archive"),
    Page("GET", "/worksets/{workset_id}/daylily/{name}", detail.daylily_file, "workset_daylily"),
    Page("GET", "/generator", generator.form, "generator"),
    Page("POST", "/generator", generator.generate, "generator_submit"),
    Page("POST", "/generator/download", generator.download, "generator_download"),
    Page("GET", "/files", files.browse, "files"),
    Page("GET", "/files/download", files.download, "files_download"),
    Page("POST", "/files/delete", files.delete, "files_delete"),
    Page("GET", "/usage", usage.page, "usage"),
    Page("GET", "/usage.csv", usage.csv, "usage_csv"),
    Page("GET", "/settings", settings.page, "settings"),
    Page("POST", "/settings/api-keys", settings.create_api_key, "settings_api_key_create"),
    Page("POST", "/settings/api-keys/{key_id}/revoke", settings.revoke_api_key, "settings_api_key_revoke"),
    Page("POST", "/settings/nats-credentials", settings.create_nats_credential, "settings_nats_create"),
    Page(
        "POST",
        "/settings/nats-credentials/{credential_id}/revoke",
        settings.revoke_nats_credential,
        "settings_nats_revoke",
    ),
    Page("POST", "/settings/invitations", settings.invite, "settings_invite"),
    Page("POST", "/settings/notifications", settings.save_notifications, "settings_notifications"),
    Page(
        "POST",
        "/settings/invitations/{invitation_id}/revoke",
        settings.revoke_invitation,
        "settings_invitation_revoke",
    ),
    # --- operator pages
    Page("GET", "/ops/customers", operator.customers, "ops_customers", "operator"),
    Page("POST", "/ops/customers", operator.onboard, "ops_customers_onboard", "operator"),
    Page("POST", "/ops/customers/{customer_id}", operator.update_customer, "ops_customer_update", "operator"),
    Page("GET", "/ops/clusters", operator.clusters, "ops_clusters", "operator"),
    Page("POST", "/ops/clusters", operator.save_cluster_form, "ops_clusters_save", "operator"),
    Page("POST", "/ops/clusters/{name}/{action}", operator.cluster_action, "ops_cluster_action", "operator"),
    Page("GET", "/ops/regions", operator.regions, "ops_regions", "operator"),
    Page("GET", "/ops/regions/{region}", operator.region, "ops_region", "operator"),
    Page("POST", "/ops/regions/{region}/{action}", operator.region_command, "ops_region_command", "operator"),
    Page("GET", "/ops/dlq", operator.dead_letters, "ops_dlq", "operator"),
    Page("GET", "/ops/dlq/{workset_id}", operator.dead_letter, "ops_dlq_inspect", "operator"),
    Page(
        "POST", "/ops/dlq/{workset_id}/requeue", operator.requeue_dead_letter, "ops_dlq_requeue", "operator"
    ),
    Page("POST", "/ops/dlq/{workset_id}/purge", operator.purge_dead_letter, "ops_dlq_purge", "operator"),
    Page("GET", "/ops/health", operator.health, "ops_health", "operator"),
)


def setup_page_routes(app: web.Application) -> None:
    access: dict[str, PageAccess] = {}
    for page in PAGES:
        app.router.add_route(page.method, page.path, page.handler, name=page.name)
        access[page.name] = page.access
    app.router.add_get(STATIC_PREFIX + "{path:.+}", static_file, name="static")
    access["static"] = "public"
    app[PAGE_ACCESS] = access
