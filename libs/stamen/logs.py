"""structlog set-up: JSON lines by default, with context (workset_id, event_id) bound per message.

Records from the standard `logging` module (asyncio, aiohttp, nats, asyncpg, ...) and Python
warnings go through the same renderer via structlog's `ProcessorFormatter`, so a service's output is
one format throughout: with `json`, every line is one JSON object a log shipper can parse.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

FORMATS = ("json", "console")


class _StamenHandler(logging.StreamHandler[TextIO]):
    """The root handler this module installs; a marker class so a second call replaces it."""


def configure_logging(
    level: str = "INFO", fmt: str = "json", service: str | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library's root logger to write `fmt` lines to `stream`.

    `level` filters structlog events; standard-library records are kept at WARNING and above (or
    `level`, if higher) so library chatter at INFO does not drown the service's own events.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not supported; set STAMEN_LOG_FORMAT to one of {FORMATS}")
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(
            f"log level {level!r} is not a level name; set STAMEN_LOG_LEVEL to DEBUG, INFO, WARNING or ERROR"
        )
    out = stream if stream is not None else sys.stderr
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    # The same enrichment for both paths, so a stdlib line carries the bound service/workset/event ids.
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)

    handler = _StamenHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # add_logger_name only here: structlog's own lines are written by a PrintLogger, which has no name.
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StamenHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, numeric_level))
    # Python warnings (e.g. asyncpg's InterfaceWarning) would otherwise be bare text between JSON lines.
    logging.captureWarnings(True)
