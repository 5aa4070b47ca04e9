"""The pages do what they say, signed in as a customer or an operator: keyset pages with filters and
search, bulk actions, submitting from the New page, the YAML generator, files, usage, keys, invitations
and sign-up, and the operator pages."""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import boto3

from services.portal.web.views.worksets import PAGE_SIZE
from stamen.inputs.demo import demo_fastq
from stamen.intake import submit_workset
from stamen.store.unit_of_work import UnitOfWork
from stamen.tenancy import BucketGrantRepository
from tests.api.conftest import workset_in
from tests.intake.s3kit import grant
from tests.web.conftest import Browser, World

NewBrowser = Callable[[], AbstractAsyncContextManager[Browser]]
_ROW = re.compile(r'<tr id="row-(ws-[0-9a-f]+)"')


async def test_worksets_list_keyset_pages_filters_search_and_bulk(world: World, browser: NewBrowser) -> None:
    a = world.a.id
    made = []
    for i in range(PAGE_SIZE + 12):
        result = await submit_workset(
            world.pool,
            tenant_id=a,
            name=f"bulkpage-{i:03d}",
            region="us-west-2",
            source="api",
            actor="test",
            spec={
                "name": f"bulkpage-{i:03d}",
                "tenant": a,
                "pipeline": "wes",
                "samples": [{"id": f"UNIT{i}", "sample_id": f"NA{12878 + i}", "platform": "ILMN"}],
            },
        )
        made.append(result.workset_id)
    email, _ = await world.lab.user(a)
    async with browser() as b:
        await b.sign_in(email)
        status, first = await b.get("/worksets?q=bulkpage")
        ids = _ROW.findall(first)
        assert status == 200 and len(ids) == PAGE_SIZE and ids == list(reversed(made))[:PAGE_SIZE]
        following = re.search(r'href="(/worksets\?[^"]+)" rel="next"', first)
        assert following is not None
        _, second = await b.get(following.group(1).replace("&amp;", "&"))
        rest = _ROW.findall(second)
        assert rest == list(reversed(made))[PAGE_SIZE:] and 'rel="next"' not in second and "Page 2" in second
        # Search by a sample id, any case; filters; sort by name.
        _, found = await b.get("/worksets?q=na12880")
        assert _ROW.findall(found) == [made[2]]
        _, by_name = await b.get("/worksets?q=bulkpage&sort=name&pipeline=wes&state=submitted")
        assert _ROW.findall(by_name) == made[:PAGE_SIZE]
        _, none = await b.get("/worksets?q=bulkpage&pipeline=rna-seq")
        assert not _ROW.findall(none) and "No worksets match these filters" in none
        status, bad = await b.get("/worksets?after=not-a-cursor")
        assert status == 400 and "INVALID_PARAMETER" in bad and "after" in bad
        status, bad = await b.get("/worksets?state=sleeping")
        assert status == 400 and "state" in bad
        # Bulk cancel two, and try to archive one that is not finished: each gets its own answer.
        response = await b.post(
            "/worksets/bulk?q=bulkpage", [("action", "cancel"), ("ids", made[0]), ("ids", made[1])]
        )
        assert response.status == 200 and (await response.text()).count("now cancelled") == 2
        response = await b.post("/worksets/bulk", [("action", "archive"), ("ids", made[2])])
        assert "only finished worksets can be archived" in await response.text()
        response = await b.post("/worksets/bulk", [("action", "archive"), ("ids", made[0])])
        assert "now archived" in await response.text()


async def test_new_workset_page_checks_as_you_type_and_submits(world: World, browser: NewBrowser) -> None:
    email, _ = await world.lab.user(world.a.id)
    bucket = await _bucket(world, world.a.id)
    form = {
        "name": "from-the-page",
        "pipeline": "fastq-qc",
        "reference_genome": "hg38",
        "priority": "urgent",
        "max_retries": "2",
        "samples-0-id": "S1",
        "samples-0-platform": "ILMN",
        "samples-0-r1": f"s3://{bucket}/reads/S1_R1.fastq.gz",
        "samples-0-r2": "not-a-uri",
        "export_uri": f"s3://{bucket}/results/from-the-page/",
        "emails": "lab@lab.example",
        "events": "error",
    }
    async with browser() as b:
        await b.sign_in(email)
        status, page = await b.get("/worksets/new")
        assert status == 200 and f"s3://{bucket}/uploads/" in page
        check = await b.post("/worksets/new/check", form, headers={"HX-Request": "true"})
        text = await check.text()
        # The finding is placed at its field (an out-of-band swap into that field's slot).
        assert re.search(
            r'id="f-samples-0-r2" hx-swap-oob="true">[^<]*samples\[0\]\.r2|id="f-samples-0-r2" hx-swap-oob="true">\w',
            text,
        )
        assert "problem" in text and "to fix before this can be submitted" in text
        refused = await b.post("/worksets/new", {**form, "action": "submit"})
        assert refused.status == 422
        async with world.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM worksets WHERE name = 'from-the-page'") == 0
        # B's reads, named on A's form: refused at the field by stamen.tenancy (as the API does), never
        # fetched, so the page says the same whether B's object exists or not.
        other = await _bucket(world, world.b.id)
        foreign = {
            **form,
            "samples-0-r1": f"s3://{other}/private/S1_R1.fastq.gz",
            "samples-0-r2": f"s3://{other}/private/S1_R2.fastq.gz",
        }
        put_object(world, other, "private/S1_R1.fastq.gz", demo_fastq("S1", 1, reads=50))
        present = await (await b.post("/worksets/new/check", foreign, headers={"HX-Request": "true"})).text()
        _delete_object(world, other, "private/S1_R1.fastq.gz")
        absent = await (await b.post("/worksets/new/check", foreign, headers={"HX-Request": "true"})).text()
        assert present == absent and "SNF-" not in present
        assert re.search(
            r'id="f-samples-0-r1" hx-swap-oob="true">S3-ACCESS-001: [^<]*' + re.escape(other), present
        )
        assert (await b.post("/worksets/new", {**foreign, "action": "submit"})).status == 422
        # Pasting a sample sheet fills the table; a blank row at the end is not a sample.
        sheet = await b.post(
            "/worksets/new",
            {
                **form,
                "action": "use_sheet",
                "sheet": "id\tplatform\tr1\tr2\nP1\tILMN\ts3://x/1.fq.gz\ts3://x/2.fq.gz\n",
            },
        )
        assert 'value="P1"' in await sheet.text()
        # With real FASTQs in the bucket, the same form is valid and submits.
        for mate in (1, 2):
            put_object(world, bucket, f"reads/S1_R{mate}.fastq.gz", demo_fastq("S1", mate, reads=50))
        ok = {
            **form,
            "samples-0-r2": f"s3://{bucket}/reads/S1_R2.fastq.gz",
            "samples-1-id": "",
            "action": "submit",
        }
        submitted = await b.post("/worksets/new", ok)
        assert submitted.status == 303, (await submitted.text())[:3000]
        assert submitted.headers["Location"].endswith("?notice=submitted")
        workset_id = submitted.headers["Location"].split("/")[2].split("?")[0]
        async with UnitOfWork(world.pool) as uow:
            ws = await uow.worksets.get(workset_id)
        assert (
            ws.tenant_id == world.a.id
            and ws.priority == "urgent"
            and ws.spec["notifications"]["events"] == ["error"]
        )


def put_object(world: World, bucket: str, key: str, body: bytes) -> None:
    s3 = boto3.client("s3", endpoint_url=world.lab.endpoint, region_name="us-west-2")
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def _delete_object(world: World, bucket: str, key: str) -> None:
    boto3.client("s3", endpoint_url=world.lab.endpoint, region_name="us-west-2").delete_object(
        Bucket=bucket, Key=key
    )


async def test_yaml_generator_makes_the_three_files_and_a_zip(world: World, browser: NewBrowser) -> None:
    email, _ = await world.lab.user(world.a.id)
    form = {
        "name": "gen-1",
        "pipeline": "germline",
        "reference_genome": "hg38",
        "samples-0-id": "HG002-L1",
        "samples-0-sample_id": "HG002",
        "samples-0-platform": "ILMN",
        "samples-0-r1": "s3://lab/reads/HG002_R1.fastq.gz",
        "samples-0-r2": "s3://lab/reads/HG002_R2.fastq.gz",
        "export_uri": "s3://lab/results/gen-1/",
    }
    async with browser() as b:
        await b.sign_in(email)
        result = await b.post("/generator", {**form, "action": "generate"}, headers={"HX-Request": "true"})
        text = await result.text()
        names = re.findall(r'data-file="([^"]+)"', text)
        assert "daylily_work.yaml" in names and len(names) == 3, text[:1500]
        archive = await b.post("/generator/download", {**form, "file": "daylily.zip"})
        assert archive.headers["Content-Disposition"] == 'attachment; filename="gen-1-daylily.zip"'
        with zipfile.ZipFile(io.BytesIO(await archive.read())) as z:
            assert sorted(z.namelist()) == sorted(names)
            assert "HG002" in "".join(z.read(n).decode() for n in z.namelist())
        bad = await b.post(
            "/generator", {**form, "samples-0-r1": "", "action": "generate"}, headers={"HX-Request": "true"}
        )
        assert "data-file=" not in await bad.text()


async def test_files_presigned_upload_download_and_delete(world: World, browser: NewBrowser) -> None:
    email, _ = await world.lab.user(world.a.id)
    bucket = await _bucket(world, world.a.id)
    async with browser() as b:
        await b.sign_in(email)
        status, page = await b.get("/files")
        assert status == 200 and f"s3://{bucket}/" in page
        for key in ("../etc/passwd", "/abs", "a//b"):
            refused = await b.session.post(
                "/uploads/presign", json={"key": key, "size": 5}, headers={"X-CSRF-Token": b.csrf}
            )
            assert refused.status == 400 and "INVALID_PARAMETER" in await refused.text(), key
        presigned = await b.session.post(
            "/uploads/presign",
            json={"key": "runs/r1/S1_R1.fastq.gz", "size": 11},
            headers={"X-CSRF-Token": b.csrf},
        )
        post: dict[str, Any] = await presigned.json()
        assert post["uri"] == f"s3://{bucket}/runs/r1/S1_R1.fastq.gz"
        form = aiohttp.FormData(post["fields"])
        form.add_field("file", b"hello reads", filename="S1_R1.fastq.gz")
        async with aiohttp.ClientSession() as s3, s3.post(post["url"], data=form) as r:
            assert r.status < 300, await r.text()
        _, folder = await b.get(f"/files?bucket={bucket}&prefix=runs/r1/")
        assert "S1_R1.fastq.gz" in folder and "11 B" in folder
        async with b.session.get(
            f"/files/download?bucket={bucket}&key=runs/r1/S1_R1.fastq.gz", allow_redirects=False
        ) as r:
            link = r.headers["Location"]
        async with aiohttp.ClientSession() as s3, s3.get(link) as r:
            assert await r.read() == b"hello reads"
        confirm = await b.post("/files/delete", {"bucket": bucket, "key": "runs/r1/S1_R1.fastq.gz"})
        assert confirm.status == 200 and "Delete this file?" in await confirm.text()
        _, still = await b.get(f"/files?bucket={bucket}&prefix=runs/r1/")
        assert "S1_R1.fastq.gz" in still
        deleted = await b.post(
            "/files/delete", {"bucket": bucket, "key": "runs/r1/S1_R1.fastq.gz", "confirm": "yes"}
        )
        assert deleted.status == 303
        _, gone = await b.get(f"/files?bucket={bucket}&prefix=runs/r1/")
        assert "S1_R1.fastq.gz" not in gone
        await _a_read_only_grant_is_browsed_not_written(world, b)


async def _a_read_only_grant_is_browsed_not_written(world: World, b: Browser) -> None:
    """A bucket an operator granted read-only (stamen.tenancy, as the intake paths see it): listed, browsable and
    downloadable, no upload or delete; once revoked, gone from the page like any other bucket."""
    shared = f"shared-refs-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=world.lab.endpoint, region_name="us-west-2")
    s3.create_bucket(Bucket=shared, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    s3.put_object(Bucket=shared, Key="hg38/genome.fa", Body=b">chr1\nACGT\n")
    await grant(world.pool, world.a.id, shared, "read-only")
    status, page = await b.get("/files")
    assert status == 200 and f'<option value="{shared}">{shared} (read-only)</option>' in page
    status, folder = await b.get(f"/files?bucket={shared}&prefix=hg38/")
    assert status == 200 and "genome.fa" in folder and "Granted read-only by test" in folder
    assert 'class="upload-form"' not in folder and "/files/delete" not in folder
    async with b.session.get(
        f"/files/download?bucket={shared}&key=hg38/genome.fa", allow_redirects=False
    ) as r:
        assert r.status == 302
    presign = await b.session.post(
        "/uploads/presign",
        json={"bucket": shared, "key": "x.fq.gz", "size": 3},
        headers={"X-CSRF-Token": b.csrf},
    )
    assert presign.status == 404 and "BUCKET_NOT_FOUND" in await presign.text()
    refused = await b.post("/files/delete", {"bucket": shared, "key": "hg38/genome.fa", "confirm": "yes"})
    assert refused.status == 403 and "BUCKET_READ_ONLY" in await refused.text()
    async with world.pool.acquire() as conn:
        await BucketGrantRepository(conn).revoke(world.a.id, shared)
    status, revoked = await b.get(f"/files?bucket={shared}")
    assert status == 404 and "genome.fa" not in revoked
    assert s3.get_object(Bucket=shared, Key="hg38/genome.fa")["Body"].read() == b">chr1\nACGT\n"


async def test_settings_keys_shown_once_invitation_sign_up_and_usage(
    world: World, browser: NewBrowser
) -> None:
    a = world.a.id
    email, _ = await world.lab.user(a)
    async with browser() as b:
        await b.sign_in(email)
        created = await b.post("/settings/api-keys", {"name": "page-key", "ttl_days": "7"})
        key = re.search(r'id="new-api-key">([^<]+)<', await created.text())
        assert key is not None
        async with world.client.get("/api/v1/worksets", headers={"X-Api-Key": key.group(1)}) as r:
            assert r.status == 200
        _, page = await b.get("/settings")
        assert "page-key" in page and key.group(1) not in page  # listed, never shown again
        invited = await b.post("/settings/invitations", {"email": "new-colleague@lab.example"})
        link = re.search(r'id="invitation-link">([^<]+)<', await invited.text())
        assert link is not None and "/signup?invite=" in link.group(1)
        status, usage = await b.get("/usage")
        assert status == 200 and "Usage and billing" in usage
        async with b.session.get("/usage.csv") as r:
            assert r.status == 200 and r.content_type == "text/csv" and a in await r.text()
    path = "/" + link.group(1).split("/", 3)[3]
    async with browser() as newcomer:
        status, form = await newcomer.get(path)
        assert status == 200 and "new-colleague@lab.example" in form and a in form
        invite = path.split("invite=")[1]
        differ = await newcomer.post(
            "/signup", {"invite": invite, "password": "Pass-Word-123", "password_again": "x"}
        )
        assert differ.status == 400
        signed_up = await newcomer.post(
            "/signup", {"invite": invite, "password": "Pass-Word-123", "password_again": "Pass-Word-123"}
        )
        assert signed_up.status == 303 and signed_up.headers["Location"].startswith("/signup/confirm")
        again = await newcomer.post(
            "/signup", {"invite": invite, "password": "Pass-Word-123", "password_again": "Pass-Word-123"}
        )
        assert again.status == 404  # an invitation works once
        confirmed = await newcomer.post(
            "/signup/confirm", {"email": "new-colleague@lab.example", "code": "123456"}
        )
        assert confirmed.status == 303
        await newcomer.sign_in("new-colleague@lab.example", "Pass-Word-123")
        status, dashboard = await newcomer.get("/")
        assert status == 200 and a in dashboard


async def test_operator_pages_drain_a_cluster_and_requeue_a_dead_letter(
    world: World, browser: NewBrowser
) -> None:
    email, _ = await world.lab.user(None, operator=True)
    dead = await workset_in(world.pool, world.a.id, "op-dead", dead_letter=True)
    async with browser() as b:
        await b.sign_in(email)
        for path in (
            "/ops/customers",
            "/ops/clusters",
            "/ops/regions",
            "/ops/dlq",
            "/ops/health",
            "/usage",
            f"/usage?tenant={world.b.id}",
            f"/settings?tenant={world.b.id}",
        ):
            status, _page = await b.get(path)
            assert status == 200, path
        saved = await b.post(
            "/ops/clusters",
            {
                "name": "page-cluster",
                "region": "us-west-2",
                "executor": "slurm",
                "max_concurrent": "3",
                "data_locations": "us-west-2",
            },
        )
        assert saved.status == 303
        bad = await b.post("/ops/clusters", {"name": "Bad Name!", "region": "nowhere", "executor": "slurm"})
        assert bad.status == 400 and "name" in await bad.text()
        drained = await b.post("/ops/clusters/page-cluster/drain")
        assert drained.status == 303
        _, clusters = await b.get("/ops/clusters")
        assert re.search(r'id="cluster-page-cluster">.*?s-draining', clusters, re.S)
        _, item = await b.get(f"/ops/dlq/{dead}")
        assert "retries exhausted: the retry budget of 2 is used up" in item
        bad = await b.post(f"/ops/dlq/{dead}/requeue", {"memory_multiplier": "lots"})
        assert bad.status == 400 and "memory_multiplier" in await bad.text()
        requeued = await b.post(f"/ops/dlq/{dead}/requeue", {"priority": "urgent", "max_retries": "1"})
        assert requeued.status == 303
        async with UnitOfWork(world.pool) as uow:
            ws = await uow.worksets.get(dead)
        assert ws.state.value == "queued" and ws.priority == "urgent" and ws.max_retries == 1
        limit = await b.post(f"/ops/customers/{world.b.id}", {"max_concurrent_worksets": "4"})
        assert limit.status == 303
        _, health = await b.get("/ops/health")
        assert "Consumers on the event stream" in health and "PostgreSQL" in health
        # The STAMEN_DLQ stream holds parked messages; "Dead letters" are worksets (/ops/dlq), a word apart.
        assert '<div class="label">Parked messages</div>' in health


async def _bucket(world: World, tenant: str) -> str:
    async with world.pool.acquire() as conn:
        return str(await conn.fetchval("SELECT s3_bucket FROM customers WHERE customer_id = $1", tenant))


async def test_notification_preferences_on_the_settings_page(world: World, browser: NewBrowser) -> None:
    email, _ = await world.lab.user(world.b.id)
    base = {
        "sns_enabled": "on",
        "sns_emails": "",
        "sns_sms": "",
        "email_min_severity": "info",
        "sms_min_severity": "error",
        "webhook_format": "json",
        "digest_minutes": "60",
        "quiet_start": "22:00",
        "quiet_end": "07:00",
        "quiet_timezone": "UTC",
    }
    async with browser() as b:
        await b.sign_in(email)
        status, page = await b.get("/settings")
        assert status == 200 and 'id="notification-form"' in page
        refused = await b.post(
            "/settings/notifications",
            {**base, "webhook_enabled": "on", "webhook_url": "https://hooks.example.org/x"},
        )
        assert refused.status == 400 and "webhook.secret" in await refused.text()
        bad_zone = await b.post(
            "/settings/notifications", {**base, "quiet_enabled": "on", "quiet_timezone": "Mars/Base"}
        )
        assert bad_zone.status == 400 and "unknown time zone" in await bad_zone.text()
        saved = await b.post(
            "/settings/notifications",
            {
                **base,
                "only_final_failures": "on",
                "quiet_enabled": "on",
                "quiet_timezone": "Europe/Berlin",
                "digest_enabled": "on",
            },
        )
        assert saved.status == 303, await saved.text()
    async with world.client.get("/api/v1/notification-preferences", headers=world.key(world.b)) as r:
        prefs = (await r.json())["preferences"]
    assert prefs["only_final_failures"] and prefs["quiet_hours"]["enabled"] and prefs["digest"]["enabled"]
    assert prefs["quiet_hours"]["timezone"] == "Europe/Berlin" and prefs["sns"]["enabled"]
