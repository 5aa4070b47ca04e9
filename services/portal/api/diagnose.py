"""POST /api/v1/diagnose: rank the error catalog's explanations of a failure log the caller sends."""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.portal.api import models as m
from services.portal.api.access import body, reply
from stamen.diagnostics import classify_error, diagnosis_document

# Failures show at the end of a log; reading only its end also bounds the work a request can ask for.
MAX_LINES = 2_000
MAX_LINE_CHARS = 2_000


def log_end(text: str) -> str:
    """The last MAX_LINES lines, each cut at MAX_LINE_CHARS characters."""
    return "\n".join(line[:MAX_LINE_CHARS] for line in text.splitlines()[-MAX_LINES:])


async def diagnose(request: web.Request) -> web.Response:
    req = await body(request, m.DiagnoseRequest)
    text = log_end(req.text)
    # Regex work on up to 4 MB of text: off the event loop.
    diagnosis = await asyncio.to_thread(
        classify_error, text, exit_code=req.exit_code, signal=req.signal, slurm_state=req.job_state or None
    )
    return reply(m.DiagnoseResponse.model_validate(diagnosis_document(diagnosis, top=req.top)))
