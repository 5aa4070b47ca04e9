"""The event loop a service process runs on: uvloop where it is installed, asyncio's own elsewhere.

A service's Python is mostly loop machinery around small database and bus round trips: uvloop (libuv,
its transports and handles in C) spends ~20% less of the process's CPU on an asyncpg round trip than
asyncio's selector loop (36 against 45 us, bench notes in bench/README.md). `STAMEN_EVENT_LOOP`
chooses: `auto` (uvloop if it can be imported, the default), `uvloop` (required: a service refuses to
start without it) or `asyncio`."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]


class EventLoopUnavailable(RuntimeError):
    code = "EVENT_LOOP_UNAVAILABLE"


def loop_factory(choice: EventLoopChoice) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The name of the loop `choice` gives on this machine, and how to make one."""
    if choice == "asyncio":
        return "asyncio", asyncio.new_event_loop
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise EventLoopUnavailable(
                "STAMEN_EVENT_LOOP=uvloop but uvloop is not installed: install it (`pip install uvloop`; "
                "Linux and macOS) or set STAMEN_EVENT_LOOP=auto or asyncio"
            ) from None
        return "asyncio", asyncio.new_event_loop
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return "uvloop", new_loop


def run_on_loop(main: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    """`asyncio.run(main)`, on the loop `choice` gives."""
    _, factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
