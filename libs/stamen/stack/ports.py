"""Free loopback ports for servers we start ourselves, and listening sockets for the services."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different free ports. Each probe socket stays open until all are picked: a closed probe's
    port may be handed out again by the very next bind(0), so picking one at a time can repeat a port."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def listening_socket(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A listening socket on `port` (0: any free port), to hand down to a child process (STAMEN_HTTP_FD):
    the port is then that child's alone, across its restarts, and never given to anything else."""
    return socket.create_server((host, port), backlog=128)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as servers set it: connections that
    closed a moment ago (TIME_WAIT) do not keep a server from listening, only another listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True
