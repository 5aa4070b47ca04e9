"""Monthly usage (JSON and CSV) and per-tenant NATS credentials over HTTP, with auth on."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from nkeys import from_seed

from services.portal.api import models as m
from stamen.customers.usage import CSV_COLUMNS
from tests.api.conftest import World


async def test_usage_as_json_and_as_csv(world: World) -> None:
    a = world.a
    month = datetime.now(UTC).strftime("%Y-%m")
    path = f"/api/v1/customers/{a.id}/usage"
    response = await world.client.get(path, headers=world.key(a))
    usage = await response.json()
    assert response.status == 200 and set(usage) == set(m.UsageOut.model_fields)
    assert usage["customer_id"] == a.id and usage["month"] == month
    # The world made two worksets for A this month: one submitted, one dead-lettered; none ran a step.
    assert usage["worksets_by_state"] == {"submitted": 1, "dead_lettered": 1} and usage["worksets_total"] == 2
    assert usage["vcpu_hours"] == 0 and usage["steps_measured"] == 0 and usage["actual_cost_usd"] == 0
    assert usage["storage_gb"] == 0 and usage["storage_measured_at"]  # A's bucket exists and is empty
    assert usage["max_storage_gb"] > 0 and usage["caveats"]
    as_csv = await world.client.get(path, params={"format": "csv", "month": month}, headers=world.key(a))
    assert as_csv.status == 200 and as_csv.content_type == "text/csv"
    assert as_csv.headers["Content-Disposition"] == f'attachment; filename="usage-{a.id}-{month}.csv"'
    rows = list(csv.reader(io.StringIO(await as_csv.text())))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["customer_id"] == a.id and row["month"] == month and row["worksets_total"] == "2"
    assert sorted(row["worksets_by_state"].split(";")) == ["dead_lettered=1", "submitted=1"]
    past = await (await world.client.get(path, params={"month": "2001-01"}, headers=world.key(a))).json()
    assert (
        past["worksets_total"] == 0 and past["storage_gb"] is None
    )  # storage is measured for this month only
    bad = await world.client.get(path, params={"month": "2025-13"}, headers=world.key(a))
    assert bad.status == 400 and (await bad.json())["code"] == "USAGE_MONTH_INVALID"
    other = await world.client.get(
        f"/api/v1/customers/{world.b.id}/usage", params={"format": "csv"}, headers=world.key(a)
    )
    assert other.status == 404 and (await other.json())["code"] == "CUSTOMER_NOT_FOUND"


async def test_nats_credentials_seed_shown_once_scoped_and_revocable(world: World) -> None:
    a, b = world.a, world.b
    created = await world.client.post(
        "/api/v1/nats-credentials", json={"name": "novaseq-01"}, headers=world.bearer(a.id_token)
    )
    body = await created.json()
    assert created.status == 201, body
    seed, record = body["seed"], body["record"]
    assert seed.startswith("SU") and record["customer_id"] == a.id and record["revoked_at"] is None
    assert from_seed(seed.encode()).public_key.decode() == record["public_key"]  # the seed is that key's
    assert record["intake_subject"] == f"stamen.intake.{a.id}" and record["inbox_prefix"] == f"_INBOX.{a.id}"
    listed = await (await world.client.get("/api/v1/nats-credentials", headers=world.key(a))).json()
    assert seed not in json.dumps(listed) and "seed" not in json.dumps(listed)
    assert record["id"] in {c["id"] for c in listed["items"]}
    duplicate = await world.client.post(
        "/api/v1/nats-credentials", json={"name": "novaseq-01"}, headers=world.bearer(a.id_token)
    )
    assert duplicate.status == 400 and (await duplicate.json())["code"] == "NATS_CREDENTIAL_REQUEST_INVALID"
    # Another tenant's credential id is not found, whether named by id alone or with its tenant.
    for headers, params in ((world.key(b), {}), (world.key(b), {"tenant": a.id})):
        refused = await world.client.delete(
            f"/api/v1/nats-credentials/{record['id']}", params=params, headers=headers
        )
        assert refused.status == 404 and (await refused.json())["code"].endswith("NOT_FOUND"), params
    theirs = await (await world.client.get("/api/v1/nats-credentials", headers=world.key(b))).json()
    assert record["id"] not in {c["id"] for c in theirs["items"]}
    revoked = await world.client.delete(f"/api/v1/nats-credentials/{record['id']}", headers=world.key(a))
    assert revoked.status == 200 and (await revoked.json())["revoked_at"]
    after = await (await world.client.get("/api/v1/nats-credentials", headers=world.key(a))).json()
    assert record["id"] not in {c["id"] for c in after["items"]}
    by_operator = await world.client.post(
        "/api/v1/nats-credentials", json={"name": "ops-made", "customer_id": b.id}, headers=world.operator
    )
    assert by_operator.status == 201 and (await by_operator.json())["record"]["customer_id"] == b.id
