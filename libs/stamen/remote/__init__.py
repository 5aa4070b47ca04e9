"""The `stamen` CLI against a running server: the portal's HTTP API, driven by its OpenAPI document."""

from stamen.remote.client import RemoteClient, error_of
from stamen.remote.errors import RemoteError
from stamen.remote.operations import Body, Operation, json_body, parse_operations, read_body
from stamen.remote.session import Connection, Session, resolve, session_path

__all__ = [
    "Body",
    "Connection",
    "Operation",
    "RemoteClient",
    "RemoteError",
    "Session",
    "error_of",
    "json_body",
    "parse_operations",
    "read_body",
    "resolve",
    "session_path",
]
