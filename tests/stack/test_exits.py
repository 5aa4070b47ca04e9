"""The launcher waits for its children's ends instead of polling them (stamen.stack.exits): a wait ends when
a child exits or when it is woken, long before its deadline."""

from __future__ import annotations

import subprocess
import threading
import time

from stamen.stack.exits import Wakeup, wait_for_exits

DEADLINE = 60.0  # far beyond what any of these waits should take


def test_a_wait_ends_when_a_child_exits() -> None:
    quick = subprocess.Popen(["sleep", "0.2"])
    slow = subprocess.Popen(["sleep", "600"])
    try:
        started = time.monotonic()
        wait_for_exits([slow, quick], Wakeup(), DEADLINE, poll=DEADLINE)
        assert time.monotonic() - started < DEADLINE / 2
        assert quick.poll() == 0 and slow.poll() is None
    finally:
        slow.kill()
        slow.wait()


def test_a_wait_ends_when_woken_from_another_thread() -> None:
    child = subprocess.Popen(["sleep", "600"])
    wakeup = Wakeup()
    try:
        threading.Timer(0.2, wakeup.set).start()
        started = time.monotonic()
        wait_for_exits([child], wakeup, DEADLINE, poll=DEADLINE)
        assert time.monotonic() - started < DEADLINE / 2
        assert child.poll() is None
        # The wake-up was used up: the next wait lasts until its deadline.
        started = time.monotonic()
        wait_for_exits([child], wakeup, 0.3, poll=DEADLINE)
        assert time.monotonic() - started >= 0.25
    finally:
        child.kill()
        child.wait()


def test_a_child_already_reaped_ends_the_wait_at_once() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    wait_for_exits([child], Wakeup(), None, poll=DEADLINE)  # would block forever if it waited on it
