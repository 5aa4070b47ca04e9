"""Operations over HTTP with auth on: where a workset was placed, cluster management, the dead-letter queue
(every attempt, requeue only of dead letters), and retry / requeue with changes."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext

from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import dlq_subject
from stamen.domain.lifecycle import WorksetState
from stamen.events.envelope import new_envelope
from stamen.events.types import WorksetFailed
from stamen.store.unit_of_work import UnitOfWork
from tests.api.conftest import World, workset_in

S = WorksetState


async def _move(world: World, workset_id: str, *states: WorksetState, **fields: Any) -> None:
    async with UnitOfWork(world.pool) as uow:
        ws = await uow.worksets.get(workset_id, for_update=True)
        for state in states:
            ws.transition(state, actor="test", reason="test fixture")
        for name, value in fields.items():
            setattr(ws, name, value)
        await uow.worksets.save(ws)
        await uow.commit()


async def _cluster(world: World, name: str) -> None:
    added = await world.client.post(
        "/api/v1/clusters",
        headers=world.operator,
        json={"name": name, "region": "us-west-2", "max_concurrent": 4},
    )
    assert added.status == 201, await added.text()


async def test_a_workset_shows_where_it_was_placed_and_why(world: World) -> None:
    workset_id = world.a.target.workset_id
    path = f"/api/v1/worksets/{workset_id}"
    before = await (await world.client.get(path, headers=world.key(world.a))).json()
    assert (before["cluster"], before["placement_reason"], before["placement_scores"]) == (None, None, None)
    scores = {"west-1": 0.82, "west-2": 0.4}
    await _move(
        world,
        workset_id,
        S.VALIDATING,
        S.QUEUED,
        S.SCHEDULED,
        cluster="west-1",
        placement_reason="inputs in the cluster's region; lowest load",
        placement_scores=scores,
    )
    for headers in (world.key(world.a), world.operator):
        shown = await (await world.client.get(path, headers=headers)).json()
        assert shown["state"] == "scheduled" and shown["cluster"] == "west-1"
        assert shown["placement_reason"] == "inputs in the cluster's region; lowest load"
        assert shown["placement_scores"] == scores


async def test_operators_drain_activate_and_remove_clusters(world: World) -> None:
    await _cluster(world, "west-9")
    drained = await world.client.post("/api/v1/clusters/west-9/drain", headers=world.operator)
    assert drained.status == 200 and (await drained.json())["status"] == "draining"
    active = await world.client.post("/api/v1/clusters/west-9/activate", headers=world.operator)
    assert active.status == 200 and (await active.json())["status"] == "active"
    async with UnitOfWork(world.pool) as uow:  # a workset holds a slot there
        await uow.slots.acquire_lease(
            workset_id=world.a.target.workset_id,
            tenant_id=world.a.id,
            cluster="west-9",
            holder="test",
            attempt=1,
        )
        await uow.commit()
    busy = await world.client.delete("/api/v1/clusters/west-9", headers=world.operator)
    body = await busy.json()
    assert busy.status == 409 and body["code"] == "CLUSTER_BUSY" and body["details"] == {"cluster": "west-9"}
    assert "drain it" in body["message"]
    async with UnitOfWork(world.pool) as uow:
        await uow.slots.release_lease(world.a.target.workset_id, 1, "completed")
        await uow.commit()
    removed = await world.client.delete("/api/v1/clusters/west-9", headers=world.operator)
    assert removed.status == 200 and await removed.json() == {"name": "west-9", "removed": True}
    listed = await (await world.client.get("/api/v1/clusters", headers=world.operator)).json()
    assert "west-9" not in {c["name"] for c in listed["items"]}
    for method, path in (
        ("DELETE", "/api/v1/clusters/west-9"),
        ("POST", "/api/v1/clusters/west-9/activate"),
        ("POST", "/api/v1/clusters/nowhere/drain"),
    ):
        gone = await world.client.request(method, path, headers=world.operator)
        assert gone.status == 404 and (await gone.json())["code"] == "CLUSTER_NOT_FOUND", (method, path)


async def test_a_dead_letter_shows_every_attempt(world: World) -> None:
    dead = world.a.target.dead_letter_id
    await _cluster(world, "west-1")
    await _cluster(world, "west-2")
    async with UnitOfWork(world.pool) as uow:
        for attempt, cluster in ((1, "west-1"), (2, "west-2")):
            await uow.slots.acquire_lease(
                workset_id=dead,
                tenant_id=world.a.id,
                cluster=cluster,
                holder=f"scheduler-{attempt}",
                attempt=attempt,
            )
            await uow.slots.release_lease(dead, attempt, "failed")
        await uow.commit()
    shown = await (await world.client.get(f"/api/v1/dlq/{dead}", headers=world.operator)).json()
    assert shown["dead_letter"]["workset_id"] == dead and shown["workset"]["id"] == dead
    assert (shown["dead_letter"]["reason"], shown["dead_letter"]["detail"]) == (
        "retries_exhausted",
        "the retry budget of 2 is used up",
    )
    # Its owner sees why it stopped too: in the listing and in the workset itself.
    mine = await (await world.client.get("/api/v1/worksets", headers=world.key(world.a))).json()
    reasons = {w["id"]: w["dead_letter_reason"] for w in mine["items"]}
    assert reasons[dead] == "retries_exhausted" and reasons[world.a.target.workset_id] is None
    own = await (await world.client.get(f"/api/v1/worksets/{dead}", headers=world.key(world.a))).json()
    assert own["dead_letter"]["reason"] == "retries_exhausted" and own["dead_letter"]["attempts"] == 3
    runs = shown["runs"]
    assert [(r["attempt"], r["cluster"], r["holder"], r["outcome"]) for r in runs] == [
        (1, "west-1", "scheduler-1", "failed"),
        (2, "west-2", "scheduler-2", "failed"),
    ]
    assert all(r["admitted_at"] <= r["released_at"] for r in runs)
    empty = await (
        await world.client.get(f"/api/v1/dlq/{world.b.target.dead_letter_id}", headers=world.operator)
    ).json()
    assert empty["runs"] == []


async def test_requeue_takes_only_dead_letters_and_applies_changes(world: World) -> None:
    a = world.a
    failed = await workset_in(world.pool, a.id, "failed-not-parked")
    await _move(world, failed, S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING, S.FAILED)
    for workset_id in (a.target.workset_id, failed, "ws-does-not-exist"):
        refused = await world.client.post(f"/api/v1/dlq/{workset_id}/requeue", headers=world.operator)
        body = await refused.json()
        assert refused.status == 404 and body["code"] == "DEAD_LETTER_NOT_FOUND", (workset_id, body)
    async with UnitOfWork(world.pool) as uow:
        assert (await uow.worksets.get(failed)).state is S.FAILED  # not touched
    dead = a.target.dead_letter_id
    for bad in (
        {"changes": {"samples": []}},
        {"changes": {"max_retries": 11}},
        {"changes": {"priority": "asap"}},
        {"changes": {"max_duration_seconds": 0}},
        {"other": 1},
    ):
        refused = await world.client.post(f"/api/v1/dlq/{dead}/requeue", json=bad, headers=world.operator)
        assert refused.status == 400 and (await refused.json())["code"] == "REQUEST_INVALID", bad
    changes = {
        "max_retries": 5,
        "max_duration_seconds": 3600,
        "priority": "urgent",
        "preferred_cluster": "west-2",
    }
    requeued = await world.client.post(
        f"/api/v1/dlq/{dead}/requeue", json={"changes": changes}, headers=world.operator
    )
    assert requeued.status == 200, await requeued.text()
    assert await requeued.json() == {"workset_id": dead, "state": "queued"}
    shown = await (await world.client.get(f"/api/v1/worksets/{dead}", headers=world.key(a))).json()
    assert shown["state"] == "queued" and shown["max_retries"] == 5 and shown["priority"] == "urgent"
    assert shown["spec"]["preferred_cluster"] == "west-2" and shown["spec"]["max_duration_seconds"] == 3600
    again = await world.client.post(f"/api/v1/dlq/{dead}/requeue", headers=world.operator)
    assert again.status == 404 and (await again.json())["code"] == "DEAD_LETTER_NOT_FOUND"  # left the queue


async def test_a_customer_retries_its_failed_workset_with_changes(world: World) -> None:
    a = world.a
    failed = await workset_in(world.pool, a.id, "failed-once")
    await _move(world, failed, S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING, S.FAILED)
    path = f"/api/v1/worksets/{failed}/retry"
    refused = await world.client.post(path, json={"changes": {"max_retries": -1}}, headers=world.key(a))
    assert refused.status == 400 and (await refused.json())["code"] == "REQUEST_INVALID"
    hidden = await world.client.post(path, json={"changes": {"max_retries": 1}}, headers=world.key(world.b))
    assert hidden.status == 404 and (await hidden.json())["code"] == "WORKSET_NOT_FOUND"
    retried = await world.client.post(
        path, json={"changes": {"max_retries": 1, "priority": "low"}}, headers=world.key(a)
    )
    assert retried.status == 200 and (await retried.json())["state"] == "queued"
    shown = await (await world.client.get(f"/api/v1/worksets/{failed}", headers=world.key(a))).json()
    assert shown["max_retries"] == 1 and shown["priority"] == "low"
    not_now = await world.client.post(path, headers=world.key(a))  # queued now: nothing to retry
    assert not_now.status == 409 and (await not_now.json())["code"] == "WORKSET_NOT_REQUEUEABLE"


async def test_text_the_database_cannot_store_is_a_400_not_a_500(world: World) -> None:
    cluster = {"name": "nul-1", "region": "us-west-2", "config": {"partition": "a\u0000b"}}
    refused = await world.client.post("/api/v1/clusters", json=cluster, headers=world.operator)
    assert refused.status == 400 and (await refused.json())["code"] == "TEXT_NOT_STORABLE"
    assert (await refused.json())["details"] == {"field": "body.config.partition"}
    located = await world.client.post(
        "/api/v1/clusters",
        headers=world.operator,
        json={"name": "nul-2", "region": "us-west-2", "data_locations": ["a\u0000"]},
    )
    assert located.status == 400 and (await located.json())["code"] == "REQUEST_INVALID"
    cursor = await world.client.get("/api/v1/customers", params={"cursor": "a\u0000"}, headers=world.operator)
    assert cursor.status == 400 and (await cursor.json())["code"] == "INVALID_PARAMETER"
    for headers in (world.operator, world.key(world.a)):
        path = await world.client.get("/api/v1/worksets/ws-%00", headers=headers)
        assert path.status == 400 and (await path.json())["code"] == "TEXT_NOT_STORABLE"
        assert (await path.json())["details"] == {"field": "path.workset_id"}
    key = await world.client.post(
        "/api/v1/api-keys", json={"name": "lims\u0000"}, headers=world.bearer(world.a.id_token)
    )
    assert key.status == 400 and (await key.json())["details"] == {"field": "body.name"}


async def test_regions_report_the_health_admission_uses(world: World) -> None:
    """No region_health row: healthy, not reported. A row: its status (down: clusters take no worksets)."""
    await _cluster(world, "west-1")
    east = {"name": "east-1", "region": "us-east-1", "max_concurrent": 2}
    assert (await world.client.post("/api/v1/clusters", json=east, headers=world.operator)).status == 201

    async def regions() -> dict[str, tuple[str, bool, list[str]]]:
        answer = await world.client.get("/api/v1/regions", headers=world.key(world.a))
        assert answer.status == 200
        return {
            r["region"]: (r["health"], r["health_reported"], r["clusters"])
            for r in (await answer.json())["items"]
        }

    assert await regions() == {
        "us-east-1": ("healthy", False, ["east-1"]),
        "us-west-2": ("healthy", False, ["west-1"]),
    }
    async with UnitOfWork(world.pool) as uow:
        await uow.slots.set_region_health("us-east-1", "down", "AZ outage")
        await uow.slots.set_region_health("eu-west-1", "degraded", "slow")
        await uow.commit()
    assert await regions() == {
        "eu-west-1": ("degraded", True, []),
        "us-east-1": ("down", True, ["east-1"]),
        "us-west-2": ("healthy", False, ["west-1"]),
    }


async def test_a_finished_workset_shows_its_actual_use_beside_the_estimate(world: World) -> None:
    workset_id = world.a.target.workset_id
    path = f"/api/v1/worksets/{workset_id}"
    assert (await (await world.client.get(path, headers=world.key(world.a))).json())["actual"] is None
    async with world.pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO workset_actuals (workset_id, attempts, step_runs, cpu_seconds, vcpu_hours,
                                            elapsed_seconds, max_rss_mb, wall_seconds, cost_usd)
               VALUES ($1, 2, 5, 7200, 2, 3000, 512, 3600, 0.08)""",
            workset_id,
        )
    shown = await (await world.client.get(path, headers=world.key(world.a))).json()
    actual = shown["actual"]
    assert (actual["attempts"], actual["vcpu_hours"], actual["wall_seconds"], actual["cost_usd"]) == (
        2,
        2,
        3600,
        0.08,
    )


async def test_diagnose_ranks_the_catalogs_explanations_of_a_log(world: World) -> None:
    log = (
        "Error in rule sort_bam:\n"
        "/bin/bash: line 1:  3230 Killed   samtools sort -@ 8 in.bam -o out.bam\n"
        "CalledProcessError in line 97: returned non-zero exit status 137.\n"
    )
    answer = await world.client.post(
        "/api/v1/diagnose", headers=world.key(world.a), json={"text": log, "top": 2}
    )
    assert answer.status == 200, await answer.text()
    doc = await answer.json()
    assert doc["unknown"] is False
    best, wrapper = doc["candidates"]
    assert (best["code"], best["retryable"]) == ("WS-RES-001", True)
    assert best["evidence"][0]["line"] == 2 and "Killed" in best["evidence"][0]["text"]
    assert "exit code 137 (reported in the log)" in best["facts"]
    assert best["remediation"] and best["docs"].endswith("#ws-res-001")
    assert wrapper["code"] == "WS-PIP-002"  # the wrapper ranks below its cause

    unknown = await (
        await world.client.post("/api/v1/diagnose", headers=world.key(world.a), json={"text": "all quiet"})
    ).json()
    assert unknown["unknown"] is True and unknown["candidates"][0]["code"] == "WS-UNK-000"

    bad = await world.client.post(
        "/api/v1/diagnose", headers=world.key(world.a), json={"text": "x", "top": 0}
    )
    assert bad.status == 400 and (await bad.json())["code"] == "REQUEST_INVALID"
    assert (await world.client.post("/api/v1/diagnose", json={"text": "x"})).status == 401


async def test_operators_list_show_and_replay_parked_messages(world: World, js: JetStreamContext) -> None:
    workset_id = world.a.target.workset_id
    event = new_envelope(WorksetFailed(attempt=1, reason="exit 1"), tenant_id=world.a.id, region="us-west-2",
                         workset_id=workset_id)  # fmt: skip
    headers = {"Nats-Msg-Id": "dlq-diagnostics-failed-STAMEN_EVENTS-7", "Stamen-Dlq-Reason": "max_deliver",
               "Stamen-Dlq-Consumer": "diagnostics-failed", "Stamen-Dlq-Deliveries": "5",
               "Stamen-Original-Subject": f"stamen.evt.{world.a.id}.workset.failed"}  # fmt: skip
    await JetStreamPublisher(js).publish_raw(
        dlq_subject("max_deliver", "diagnostics-failed"), event.to_json(), headers
    )

    listed = await (await world.client.get("/api/v1/dlq/messages", headers=world.operator)).json()
    (item,) = listed["items"]
    assert (item["event_id"], item["workset_id"], item["reason"], item["replayable"]) == (
        str(event.id),
        workset_id,
        "max_deliver",
        True,
    )
    assert listed["next_after"] is None
    shown = await (
        await world.client.get(f"/api/v1/dlq/messages/{item['seq']}", headers=world.operator)
    ).json()
    assert shown["deliveries"] == 5 and shown["workset_state"] == "submitted"

    replayed = await world.client.post(f"/api/v1/dlq/messages/{item['seq']}/replay", headers=world.operator)
    assert replayed.status == 200 and (await replayed.json())["replayed"] is True
    back = await js.get_last_msg("STAMEN_EVENTS", f"stamen.evt.{world.a.id}.workset.failed")
    assert back.data == event.to_json() and back.headers["Stamen-Replay-For"] == "diagnostics-failed"
    assert (await (await world.client.get("/api/v1/dlq/messages", headers=world.operator)).json())[
        "items"
    ] == []
    again = await world.client.post(f"/api/v1/dlq/messages/{item['seq']}/replay", headers=world.operator)
    assert again.status == 404 and (await again.json())["code"] == "DLQ_MESSAGE_NOT_FOUND"
    bad = await world.client.get("/api/v1/dlq/messages/x1", headers=world.operator)
    assert bad.status == 400 and (await bad.json())["code"] == "DLQ_MESSAGE_SEQ_INVALID"
