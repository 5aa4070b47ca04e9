"""POST /api/v1/s3-events: S3 event notifications (direct JSON, or wrapped by SNS) for daylily.ready
objects; each named folder is picked up at once, as the watcher would on its next pass."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from services.portal.api.errors import ApiError
from services.portal.api.requests import read_body
from services.portal.api.text import require_storable
from stamen.bus.announce import announcer
from stamen.inputs.contexts import INTAKE_SETTINGS, OBJECT_STORE
from stamen.inputs.drops import DropIntake, S3EventInvalid, ready_folders_in_event
from stamen.service.keys import BUS, POOL, SETTINGS


async def s3_events(request: web.Request) -> web.Response:
    body = await read_body(request)
    intake = DropIntake(
        request.app[POOL],
        request.app[OBJECT_STORE],
        region=request.app[SETTINGS].region,
        intake=request.app[INTAKE_SETTINGS],
        announce=announcer(bus) if (bus := request.app.get(BUS)) is not None else None,
    )
    try:
        folders, ignored = ready_folders_in_event(json.loads(body), intake.prefix)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, S3EventInvalid.code, "the body is not JSON") from None
    # What is stored (s3_drops) is the bucket and the URL-decoded key, so those are checked, not the body.
    for bucket, folder in folders:
        require_storable(bucket, "body.Records[].s3.bucket.name")
        require_storable(folder, "body.Records[].s3.object.key")
    watched = [(bucket, folder) for bucket, folder in folders if bucket in intake.buckets]
    ignored += [
        f"s3://{b}/{f}: bucket is not in STAMEN_DROP_BUCKETS" for b, f in folders if b not in intake.buckets
    ]
    outcomes = await asyncio.gather(*(intake.consider(bucket, folder) for bucket, folder in watched))
    return web.json_response({"folders": [o.as_dict() for o in outcomes], "ignored": ignored})
