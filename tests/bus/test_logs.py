"""Log output: JSON lines from structlog AND the standard library, with workset/event ids bound."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from nats.js import JetStreamContext

from stamen.bus.consumer import ConsumerSpec, Delivery, DurableConsumer
from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import event_filter
from stamen.events import Envelope, new_envelope
from stamen.events.types import WorksetQueued
from stamen.logs import _StamenHandler, configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back so other tests see the defaults."""
    root = logging.getLogger()
    level = root.level
    yield
    # Only ours: pytest's own capture handlers come and go around each phase.
    for handler in [h for h in root.handlers if isinstance(h, _StamenHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # any non-JSON line fails here


def test_structlog_and_stdlib_lines_are_json_with_bound_ids() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", service="validator", stream=out)
    structlog.contextvars.bind_contextvars(workset_id="ws-42", event_id="ev-7")

    structlog.get_logger("stamen.test").info("workset.checked", findings=0)
    logging.getLogger("aiohttp.server").warning("Error handling request from %s", "10.0.0.1")
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")

    own, aiohttp_line, asyncio_line = json_lines(out.getvalue())
    assert own["event"] == "workset.checked" and own["findings"] == 0 and own["level"] == "info"
    assert aiohttp_line["event"] == "Error handling request from 10.0.0.1"
    assert aiohttp_line["level"] == "warning" and aiohttp_line["logger"] == "aiohttp.server"
    assert asyncio_line["level"] == "error" and asyncio_line["logger"] == "asyncio"
    assert "ConnectionResetError: peer went away" in asyncio_line["exception"]
    for line in (own, aiohttp_line, asyncio_line):
        assert line["workset_id"] == "ws-42" and line["event_id"] == "ev-7"
        assert line["service"] == "validator"
        assert line["timestamp"].endswith("Z")
        assert "_record" not in line and "_from_structlog" not in line


def test_python_warnings_become_json_lines() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", service="scheduler", stream=out)
    warnings.warn("connection released with an active listener", UserWarning, stacklevel=1)
    [line] = json_lines(out.getvalue())
    assert line["logger"] == "py.warnings" and line["level"] == "warning"
    assert "UserWarning: connection released with an active listener" in line["event"]
    assert line["service"] == "scheduler"


def test_levels_filter_both_paths() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    structlog.get_logger().debug("too.detailed")
    logging.getLogger("nats.aio.client").info("library chatter stays out below WARNING")
    structlog.get_logger().info("kept")
    logging.getLogger("nats.aio.client").warning("kept too")
    assert [line["event"] for line in json_lines(out.getvalue())] == ["kept", "kept too"]


def test_configuring_twice_does_not_duplicate_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", stream=first)
    configure_logging("INFO", "json", stream=second)
    logging.getLogger("asyncio").warning("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second.getvalue())] == ["once"]


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", service="relay")
    structlog.get_logger().info("outbox.published", rows=3)
    logging.getLogger("asyncpg").warning("connection lost")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = json_lines(captured.err)
    assert [line["event"] for line in lines] == ["outbox.published", "connection lost"]
    assert all(line["service"] == "relay" for line in lines)


def test_console_format_renders_both_paths_as_text() -> None:
    out = io.StringIO()
    configure_logging("INFO", "console", stream=out)
    structlog.contextvars.bind_contextvars(workset_id="ws-42")
    structlog.get_logger().info("workset.checked")
    logging.getLogger("aiohttp.server").warning("bad request")
    own, foreign = out.getvalue().splitlines()
    assert "workset.checked" in own and "workset_id=ws-42" in own
    assert "bad request" in foreign and "workset_id=ws-42" in foreign and "aiohttp.server" in foreign
    with pytest.raises(json.JSONDecodeError):
        json.loads(own)


@pytest.mark.parametrize(
    ("level", "fmt", "says"), [("INFO", "xml", "log format 'xml'"), ("LOUD", "json", "'LOUD'")]
)
def test_unknown_format_or_level_is_refused_with_the_setting_to_fix(level: str, fmt: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as refused:
        configure_logging(level, fmt, stream=io.StringIO())
    assert "STAMEN_LOG_" in str(refused.value)


async def test_consumer_binds_event_ids_while_its_handler_runs(js: JetStreamContext) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", service="validator", stream=out)
    seen: list[dict[str, Any]] = []
    handled = asyncio.Event()

    async def handler(env: Envelope, d: Delivery) -> None:
        seen.append(dict(structlog.contextvars.get_contextvars()))
        structlog.get_logger("services.test").info("test.handled")
        logging.getLogger("asyncpg.pool").warning("a library line inside the handler")
        handled.set()

    pub = JetStreamPublisher(js)
    consumer = DurableConsumer(js, ConsumerSpec("t-logs", [event_filter("workset.queued")], handler), pub)
    await consumer.start()
    try:
        event = new_envelope(WorksetQueued(), tenant_id="acme", region="us-west-2", workset_id="ws-9")
        await pub.publish(event)
        await asyncio.wait_for(handled.wait(), 10)
    finally:
        await consumer.stop(5)

    expected = {
        "workset_id": "ws-9",
        "event_id": str(event.id),
        "event_type": "workset.queued",
        "tenant_id": "acme",
        "correlation_id": str(event.correlation_id),
        "consumer": "t-logs",
        "service": "validator",
    }
    assert seen == [expected]
    lines = {line["event"]: line for line in json_lines(out.getvalue())}
    for name in ("test.handled", "a library line inside the handler"):
        assert {k: lines[name].get(k) for k in expected} == expected, name
    assert "workset_id" not in structlog.contextvars.get_contextvars()  # unbound outside the handler
