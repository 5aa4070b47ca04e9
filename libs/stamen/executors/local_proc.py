"""What the local executor learns about processes from /proc: who is alive, since when, how big.

A pid names one process only together with its start time (in clock ticks since boot) and the boot
id: pids are reused, and a start time means nothing after a reboot.
"""

from __future__ import annotations

import functools
import os

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on; None when the process does not exist.

    The command name (field 2) may contain spaces and parentheses, so split after the last ')'.
    """
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    try:
        raw = os.read(fd, 4096)
    except ProcessLookupError:  # it ended between the open and the read
        return None
    finally:
        os.close(fd)
    return raw[raw.rindex(b")") + 2 :].decode().split()


@functools.cache
def boot_id() -> str:
    """This boot's id: a pid and a start time name one process only within one boot (read once: it
    cannot change while this process lives)."""
    try:
        with open(BOOT_ID_FILE, encoding="ascii") as file:
            return file.read().strip()
    except OSError:
        return ""


def process_start_time(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22); None if it is gone."""
    fields = proc_stat_fields(pid)
    return fields[19] if fields else None


def process_is_alive(pid: int, start_time: str, boot: str = "") -> bool:
    """True if `pid` is still the same live process: same boot, same start time, not a zombie."""
    if boot and boot != boot_id():
        return False
    fields = proc_stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X") and fields[19] == start_time


def _group_members(pgid: int) -> list[list[str]]:
    """/proc/<pid>/stat fields of every live (non-zombie) process of process group `pgid`."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = proc_stat_fields(int(entry.name))
            # fields[0] = state, fields[2] = pgrp (stat fields 3 and 5).
            if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(fields)
    return members


def group_is_alive(pgid: int) -> bool:
    """True if a live (non-zombie) process of process group `pgid` exists."""
    return bool(_group_members(pgid))


def group_resident_bytes(pgid: int) -> int:
    """Sum of the resident memory of every live process in process group `pgid`."""
    page_size = os.sysconf("SC_PAGE_SIZE")
    return sum(int(fields[21]) * page_size for fields in _group_members(pgid))  # stat field 24: rss in pages
