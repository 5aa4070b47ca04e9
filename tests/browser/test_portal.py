"""Clicking through the portal in Chromium, as its people would: an operator onboards a lab and manages the
fleet; the lab's admin signs in for the first time, invites a colleague who signs up; the lab uploads FASTQs
and submits a workset that goes to completed live, downloads its report, cancels another, generates Daylily
YAML, switches the theme; another lab cannot open its workset. Every page is photographed light and dark."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import re
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import pytest
from playwright.async_api import expect

from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.inputs.demo import demo_fastq
from stamen.retry import GiveUpReason
from stamen.store.unit_of_work import UnitOfWork
from stamen.tenancy import BucketGrantRepository
from tests.browser.conftest import PASSWORD, Stack

pytestmark = pytest.mark.slow
LIVE_SECONDS = 120  # a fastq-qc run on a loaded machine


# Selects whose chosen option is wider than the room inside them (the browser cuts it: "unchanged (norm").
CUT_SELECTS = """(selects) => {
  const ruler = document.createElement("canvas").getContext("2d");
  return selects.filter((s) => s.offsetWidth > 0).map((s) => {
    const style = getComputedStyle(s);
    ruler.font = style.font;
    const text = (s.selectedOptions[0]?.textContent || "").trim();
    const room = s.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return { select: s.id || s.name, text, needs: ruler.measureText(text).width, room };
  }).filter((m) => m.needs > m.room + 1);
}"""

# Tables wider than the screen scroll inside their .table-wrap; each must say so (data-more="right": its
# right edge fades) rather than end as if a column were cut.
WIDE_TABLES = """(wraps) => wraps.map((w) => ({ wider: w.scrollWidth > w.clientWidth + 1, more: w.dataset.more || "" }))"""


# Text cut by its box: an element that clips its overflow (not with an ellipsis, which says so) and holds text
# wider than itself. Visually hidden text (1 px boxes) is meant to be.
CUT_TEXT = """() => [...document.body.querySelectorAll("*")].filter((el) => {
  const style = getComputedStyle(el);
  if (!["hidden", "clip"].includes(style.overflowX) || style.textOverflow === "ellipsis") return false;
  const box = el.getBoundingClientRect();
  if (box.width <= 1 || box.height <= 1 || !el.textContent.trim()) return false;
  return el.scrollWidth > el.clientWidth + 1;
}).map((el) => `${el.tagName.toLowerCase()}.${el.className}: ${el.textContent.trim().slice(0, 60)}`)"""


async def context(chromium: Any, *, theme: str = "light", width: int = 1280) -> Any:
    return await chromium.new_context(
        viewport={"width": width, "height": 900}, color_scheme=theme, accept_downloads=True
    )


async def sign_in(page: Any, stack: Stack, email: str, password: str = PASSWORD) -> None:
    """With the keyboard only: the form is labelled and usable without a mouse."""
    await page.goto(f"{stack.url}/signin")
    await page.get_by_label("E-mail address").fill(email)
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "password"
    await page.keyboard.type(password)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")


async def shoot(page: Any, stack: Stack, name: str) -> None:
    await page.wait_for_load_state("load")
    await page.screenshot(path=str(stack.shots / f"{name}.png"), full_page=True)


def fastq(sample: str, mate: int) -> bytes:
    data = demo_fastq(sample, mate, reads=400)
    assert gzip.decompress(data).startswith(b"@")
    return data


async def onboard(page: Any, stack: Stack, name: str, customer_id: str) -> None:
    await page.goto(f"{stack.url}/ops/customers")
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_label("Admin e-mail").fill(f"admin@{customer_id}.example")
    await page.get_by_label("Customer id (optional)").fill(customer_id)
    await page.get_by_label("Concurrent worksets").fill("4")
    await page.click("#onboard-button")
    await page.wait_for_selector("text=Customer onboarded.")


async def new_workset(page: Any, stack: Stack, name: str, sample: str) -> str:
    """Fill the New page, upload both FASTQs through the file inputs, check, submit: the workset id."""
    await page.goto(f"{stack.url}/worksets/new")
    await page.get_by_label("Workset name").fill(name)
    await page.fill("#samples-0-id", sample)
    for mate in (1, 2):
        await page.set_input_files(
            f"#samples-0-r{mate}-file",
            files=[
                {
                    "name": f"{sample}_R{mate}.fastq.gz",
                    "mimeType": "application/gzip",
                    "buffer": fastq(sample, mate),
                }
            ],
        )
        # (the page's CSP forbids eval, so Playwright's expect, not wait_for_function)
        await expect(page.locator(f"#samples-0-r{mate}")).to_have_value(re.compile(r"^s3://"), timeout=30000)
    bucket = (await page.get_attribute("#spec-form", "data-upload-bucket")) or ""
    await page.get_by_label("Export results to").fill(f"s3://{bucket}/results/{name}/")
    await page.wait_for_selector("#check-result >> text=Valid.", timeout=30000)
    await page.wait_for_selector("#check-result >> text=Estimate")
    await page.click("#submit-workset")
    await page.wait_for_url(re.compile(r".*/worksets/ws-[0-9a-f]+\?notice=submitted"))
    return str(re.search(r"/worksets/(ws-[0-9a-f]+)", page.url).group(1))  # type: ignore[union-attr]


async def dead_letter(stack: Stack, tenant: str) -> str:
    """A workset that used up its retries (arranged in PostgreSQL: making one fail three times for real is
    the e2e tests' job)."""
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    try:
        # Submitted and arranged in one transaction: the stack's validator must never see it `submitted`
        # (it would reject the bare spec before the arrangement, as it once did).
        ws = Workset.submit(
            tenant_id=tenant,
            name="stuck-run",
            region="us-west-2",
            source="api",
            actor="test",
            spec={"name": "stuck-run", "tenant": tenant},
        )
        s = WorksetState
        for state in (s.VALIDATING, s.QUEUED, s.SCHEDULED, s.RUNNING, s.FAILED, s.DEAD_LETTERED):
            ws.transition(state, actor="test", reason="arranged for the browser test")
        async with UnitOfWork(pool) as uow:
            await uow.worksets.add(ws)
            await uow.dead_letters.park(
                ws.id,
                tenant,
                GiveUpReason.RETRIES_EXHAUSTED,
                3,
                "WS-CLU-009",
                "the retry budget of 2 is used up",
            )
            await uow.commit()
        return ws.id
    finally:
        await pool.close()


async def shared_bucket(stack: Stack, tenant: str) -> str:
    """A reference bucket an operator granted the lab read-only (what `stamen bucket grant` does)."""
    bucket = f"shared-refs-{uuid.uuid4().hex[:6]}"
    s3 = boto3.client(
        "s3",
        region_name="us-west-2",
        endpoint_url=stack.aws_endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    s3.put_object(Bucket=bucket, Key="refs/GRCh38/genome.fa", Body=b">chr1\nACGT\n")
    conn = await asyncpg.connect(stack.database_url)
    try:
        await BucketGrantRepository(conn).grant(
            tenant, bucket, "read-only", granted_by="ops@stamen.example", note="shared references"
        )
    finally:
        await conn.close()
    return bucket


async def test_the_portal_end_to_end_in_chromium(stack: Stack, chromium: Any) -> None:
    started = time.monotonic()
    lab = f"lab-{uuid.uuid4().hex[:6]}"
    other = f"other-{uuid.uuid4().hex[:6]}"
    operator_email = stack.user(f"ops-{uuid.uuid4().hex[:6]}@stamen.example", operator=True)

    # --- the operator onboards two labs, sets a limit, drains and activates the local cluster ----------
    ops_ctx = await context(chromium)
    ops = await ops_ctx.new_page()
    await sign_in(ops, stack, operator_email)
    await onboard(ops, stack, "Lab A", lab)
    await onboard(ops, stack, "Other Lab", other)
    await ops.goto(f"{stack.url}/ops/clusters")
    await ops.click("#drain-local")
    await ops.wait_for_selector("#cluster-local .s-draining")
    await ops.click("#activate-local")
    await ops.wait_for_selector("#cluster-local .s-active")
    parked = await dead_letter(stack, other)
    still_parked = await dead_letter(stack, other)
    await ops.goto(f"{stack.url}/ops/dlq")
    await ops.click(f"a.dlq-link:has-text('{parked}')")
    await ops.get_by_label("Priority").select_option("urgent")
    await ops.click("#requeue-button")
    await ops.wait_for_url(re.compile(rf".*/worksets/{parked}\?notice=dlq-requeued"))
    assert "requeued by an operator" in await ops.text_content("#workset-live")

    # --- the lab's admin: first sign-in with the temporary password, then the new-password challenge ----
    admin_email = f"admin@{lab}.example"
    stack.cognito.admin_set_user_password(
        UserPoolId=stack.pool_id, Username=admin_email, Password="Temp-Pass-12345!", Permanent=False
    )
    lab_ctx = await context(chromium)
    page = await lab_ctx.new_page()
    await sign_in(page, stack, admin_email, "Temp-Pass-12345!")
    await page.wait_for_selector("text=Choose your password")
    await shoot(page, stack, "signin-new-password-light")
    await page.get_by_label("New password", exact=True).fill(PASSWORD)
    await page.get_by_label("New password again").fill(PASSWORD)
    await page.click("button:has-text('Set password and sign in')")
    await page.wait_for_url(f"{stack.url}/")
    assert lab in await page.text_content("header")

    # --- a colleague is invited, signs up, confirms and signs in ------------------------------------------
    await page.goto(f"{stack.url}/settings")
    await page.get_by_label("E-mail address", exact=True).fill(f"colleague@{lab}.example")
    await page.click("#invite-button")
    link = (await page.text_content("#invitation-link") or "").strip()
    colleague_ctx = await context(chromium)
    colleague = await colleague_ctx.new_page()
    await colleague.goto(link)
    await shoot(colleague, stack, "signup-light")
    await colleague.get_by_label("Password", exact=True).fill(PASSWORD)
    await colleague.get_by_label("Password again").fill(PASSWORD)
    await colleague.click("button:has-text('Create account')")
    await colleague.wait_for_selector("text=Confirm your account")
    await shoot(colleague, stack, "signup-confirm-light")
    await colleague.get_by_label("Confirmation code").fill("000000")
    await colleague.click("button:has-text('Confirm')")
    await colleague.wait_for_selector("text=Account confirmed")
    await sign_in(colleague, stack, f"colleague@{lab}.example")
    assert lab in await colleague.text_content("header")
    await colleague_ctx.close()

    # --- upload FASTQs, submit from the New page, watch it complete live, download the report -----------
    workset = await new_workset(page, stack, "trio-live", "S1")
    await page.evaluate("window.__stamenNoReload = true")
    await page.wait_for_selector("#workset-state[data-state=completed]", timeout=LIVE_SECONDS * 1000)
    assert await page.evaluate("window.__stamenNoReload === true"), "the page reloaded"
    await page.wait_for_selector("a.output-link:has-text('qc.json')")
    async with page.expect_download() as download_info:
        await page.click("a.output-link:has-text('qc.json')")
    download = await download_info.value
    report = json.loads(Path(await download.path()).read_text())
    assert download.suggested_filename == "qc.json" and report["workset_id"] == workset
    await shoot(page, stack, "workset-completed-light")

    # --- cancel another --------------------------------------------------------------------------------
    second = await new_workset(page, stack, "to-cancel", "S2")
    await page.click("#cancel-button")
    await page.wait_for_selector("#workset-state[data-state=cancelled]", timeout=LIVE_SECONDS * 1000)

    # --- the YAML generator ----------------------------------------------------------------------------
    await page.goto(f"{stack.url}/generator")
    await page.get_by_label("Workset name").fill("trio-yaml")
    await page.fill("#samples-0-id", "HG002-L1")
    await page.fill("#samples-0-r1", "s3://lab-reads/HG002_R1.fastq.gz")
    await page.fill("#samples-0-r2", "s3://lab-reads/HG002_R2.fastq.gz")
    await page.get_by_label("Export results to").fill("s3://lab-results/trio-yaml/")
    await page.wait_for_selector("pre[data-file='daylily_work.yaml']", timeout=30000)
    async with page.expect_download() as zip_info:
        await page.click("#download-zip")
    with zipfile.ZipFile(io.BytesIO(Path(await (await zip_info.value).path()).read_bytes())) as archive:
        assert "daylily_work.yaml" in archive.namelist() and len(archive.namelist()) == 3
    await shoot(page, stack, "generator-light")

    # --- the theme switch is remembered ----------------------------------------------------------------
    before = await page.evaluate("document.documentElement.dataset.theme || 'auto'")
    await page.click("#theme-toggle")
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark" != before
    await page.reload()
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    await page.click("#theme-toggle")
    await page.reload()
    assert await page.evaluate("document.documentElement.dataset.theme") == "light"

    # --- another lab opening this lab's workset gets a 404 --------------------------------------------
    outsider = stack.user(f"user@{other}.example", tenant=other)
    out_ctx = await context(chromium)
    out_page = await out_ctx.new_page()
    await sign_in(out_page, stack, outsider)
    response = await out_page.goto(f"{stack.url}/worksets/{workset}")
    assert response.status == 404 and "trio-live" not in await out_page.content()
    await out_ctx.close()

    # --- a read-only grant on the Files page: browsable, no upload, no delete -----------------------------
    shared = await shared_bucket(stack, lab)
    await page.goto(f"{stack.url}/files?bucket={shared}&prefix=refs/GRCh38/")
    await page.wait_for_selector("text=Granted read-only by ops@stamen.example")
    assert await page.locator("a.download-link:has-text('genome.fa')").count() == 1
    assert await page.locator(".upload-form").count() == 0 and await page.locator("text=Delete…").count() == 0

    # --- every page, light and dark (and a phone) ---------------------------------------------------------
    customer_pages = {
        "dashboard": "/",
        "worksets": "/worksets",
        "workset": f"/worksets/{workset}",
        "workset-cancelled": f"/worksets/{second}",
        "new-workset": "/worksets/new",
        "generator": "/generator",
        "files": "/files",
        "files-shared": f"/files?bucket={shared}&prefix=refs/GRCh38/",
        "usage": "/usage",
        "settings": "/settings",
        "not-found": "/worksets/ws-nope",
    }
    operator_pages = {
        "ops-customers": "/ops/customers",
        "ops-clusters": "/ops/clusters",
        "ops-regions": "/ops/regions",
        "ops-dlq": "/ops/dlq",
        "ops-dlq-item": f"/ops/dlq/{still_parked}",
        "ops-health": "/ops/health",
        "ops-region": "/ops/regions/us-west-2",
        "ops-dashboard": "/",
        "ops-worksets": "/worksets",
    }
    public_pages = {"signin": "/signin", "forgot": "/forgot", "signup-invalid": "/signup?invite=nope"}
    shots = 0
    for theme in ("light", "dark"):
        for who, pages_of, email in (
            ("customer", customer_pages, admin_email),
            ("operator", operator_pages, operator_email),
            ("public", public_pages, None),
        ):
            ctx = await context(chromium, theme=theme)
            shot = await ctx.new_page()
            errors: list[str] = []
            shot.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            shot.on(
                "console",
                lambda m, errors=errors: (
                    errors.append(m.text) if m.type == "error" and "404" not in m.text else None
                ),
            )
            if email:
                await sign_in(shot, stack, email)
            cut: dict[str, Any] = {}
            for name, path in pages_of.items():
                await shot.goto(f"{stack.url}{path}")
                await shoot(shot, stack, f"{name}-{theme}")
                shots += 1
                if found := await shot.locator("select").evaluate_all(CUT_SELECTS):
                    cut[name] = found
                if found := await shot.evaluate(CUT_TEXT):
                    cut[f"{name} text"] = found
            assert not errors, f"{who} pages, {theme}: {errors}"
            assert not cut, f"{who} pages, {theme}: selects or text shown cut: {cut}"
            await ctx.close()
    # Every page at a phone's width: nothing wider than the screen, nothing cut, wide tables marked.
    narrow: dict[str, Any] = {}
    for pages_of, email in (
        (customer_pages, admin_email),
        (operator_pages, operator_email),
        (public_pages, None),
    ):
        phone = await context(chromium, width=390)
        small = await phone.new_page()
        if email:
            await sign_in(small, stack, email)
        for name, path in pages_of.items():
            await small.goto(f"{stack.url}{path}")
            await shoot(small, stack, f"{name}-phone")
            width = await small.evaluate("document.documentElement.scrollWidth")
            if width > 400:
                narrow[f"{name} width"] = width
            if found := await small.locator("select").evaluate_all(CUT_SELECTS):
                narrow[f"{name} selects"] = found
            if found := await small.evaluate(CUT_TEXT):
                narrow[f"{name} text"] = found
            tables = await small.locator(".table-wrap").evaluate_all(WIDE_TABLES)
            if not all("right" in t["more"] for t in tables if t["wider"]):
                narrow[f"{name} tables"] = tables
            if name == "workset":  # its steps table is wider than a phone
                assert any(t["wider"] for t in tables), tables
        await phone.close()
    assert not narrow, f"pages at 390 px: {narrow}"
    await asyncio.gather(ops_ctx.close(), lab_ctx.close())
    assert shots == 2 * (len(customer_pages) + len(operator_pages) + len(public_pages))
    print(f"\nbrowser suite: {shots} screenshots in {stack.shots}, {time.monotonic() - started:.1f}s")
