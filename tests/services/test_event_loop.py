"""Which event loop a service runs on (stamen.service.loop), and the error when a required one is missing."""

from __future__ import annotations

import asyncio
import sys

import pytest

from stamen.service.loop import EventLoopUnavailable, loop_factory, run_on_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_and_uvloop_run_on_uvloop_where_it_is_installed() -> None:
    assert loop_factory("auto")[0] == "uvloop"
    assert run_on_loop(_loop_module(), "uvloop").startswith("uvloop")
    assert run_on_loop(_loop_module(), "asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what Python does for a module it cannot import
    assert loop_factory("auto")[0] == "asyncio"
    with pytest.raises(EventLoopUnavailable, match="STAMEN_EVENT_LOOP=uvloop but uvloop is not installed"):
        loop_factory("uvloop")
