"""Where the remote CLI takes its URL and credentials from, and how it builds requests from the OpenAPI
document (the server's own document, built from its route table)."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from services.portal.api.openapi import build_document
from services.portal.api.routes import ROUTES
from stamen.remote import RemoteError, Session, parse_operations, read_body, resolve
from stamen.remote.operations import fill_path, find
from stamen.remote.session import load_session, save_session, session_path


def session(url: str = "http://portal:8080", *, expires_in: float = 3600) -> Session:
    return Session(
        url=url,
        email="u@lab.example",
        id_token="id-tok",
        access_token="access-tok",
        token_type="Bearer",
        expires_at=time.time() + expires_in,
    )


def env_with_session(tmp_path: Path, s: Session | None = None, **values: str) -> dict[str, str]:
    env = {"STAMEN_CONFIG_DIR": str(tmp_path), **values}
    if s is not None:
        save_session(session_path(env), s)
    return env


def test_the_session_file_is_private_and_round_trips(tmp_path: Path) -> None:
    env = env_with_session(tmp_path / "nested" / "dir", session())
    path = session_path(env)
    assert path == tmp_path / "nested" / "dir" / "session.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_session(path) == load_session(path) is not None
    assert [p.name for p in path.parent.iterdir()] == ["session.json"]  # no temporary file left behind
    path.write_text("{not json")
    with pytest.raises(RemoteError) as exc:
        load_session(path)
    assert exc.value.code == "SESSION_UNREADABLE" and str(path) in str(exc.value)


def test_precedence_option_then_token_then_api_key_then_session(tmp_path: Path) -> None:
    env = env_with_session(tmp_path, session())
    assert resolve(None, None, env=env) == resolve(None, None, env=env)
    assert resolve(None, None, env=env).credential == "id-tok"
    assert resolve(None, None, env=env).url == "http://portal:8080"
    assert resolve(None, None, env={**env, "STAMEN_API_KEY": "stm_k"}).credential == "stm_k"
    both = {**env, "STAMEN_API_KEY": "stm_k", "STAMEN_TOKEN": "jwt"}
    assert (resolve(None, None, env=both).credential, resolve(None, None, env=both).source) == (
        "jwt",
        "STAMEN_TOKEN",
    )
    assert resolve(None, "opt", env=both).credential == "opt"
    assert resolve("http://other:1/", None, env={**env, "STAMEN_URL": "http://x"}).url == "http://other:1"
    assert resolve(None, None, env={**env, "STAMEN_URL": "http://x/"}).url == "http://x"


def test_session_tokens_go_only_to_the_server_they_came_from(tmp_path: Path) -> None:
    env = env_with_session(tmp_path, session("http://portal:8080"))
    elsewhere = resolve("http://evil.example", None, env=env)
    assert elsewhere.credential is None and "http://portal:8080" in elsewhere.source
    assert resolve("http://portal:8080/", None, env=env).credential == "id-tok"


def test_an_expired_session_says_so_and_no_url_says_how_to_give_one(tmp_path: Path) -> None:
    env = env_with_session(tmp_path, session(expires_in=-1))
    with pytest.raises(RemoteError) as exc:
        resolve(None, None, env=env)
    assert exc.value.code == "SESSION_EXPIRED" and "stamen login" in str(exc.value)
    # A credential from the environment does not need the expired session's tokens.
    assert resolve(None, None, env={**env, "STAMEN_API_KEY": "stm_k"}).credential == "stm_k"
    with pytest.raises(RemoteError) as missing:
        resolve(None, None, env={"STAMEN_CONFIG_DIR": str(tmp_path / "empty")})
    assert missing.value.code == "URL_MISSING" and "--url" in str(missing.value)


def test_every_route_parses_with_its_path_parameters() -> None:
    ops = parse_operations(build_document(ROUTES))
    by_id = {o.operation_id: o for o in ops}
    assert sorted((o.operation_id, o.method, o.path) for o in ops) == sorted(
        (r.name, r.method, r.full_path) for r in ROUTES
    )
    for route in ROUTES:
        op = by_id[route.name]
        assert [p.name for p in op.params("path")] == route.path_params
        assert op.public == (route.access == "public")
    get = find(ops, "worksets_get")
    # A value is one path segment, whatever it contains.
    assert fill_path(get, [("workset_id", "a/../b c")]) == "/api/v1/worksets/a%2F..%2Fb%20c"


def test_yaml_files_go_as_yaml_where_the_operation_takes_it(tmp_path: Path) -> None:
    ops = parse_operations(build_document(ROUTES))
    spec = tmp_path / "spec.yml"
    spec.write_text("name: x  # a comment the server may point at\n")
    body = read_body(f"@{spec}", find(ops, "worksets_create"))
    assert (body.media, body.data) == ("application/yaml", spec.read_bytes())
    as_json = read_body(f"@{spec}", find(ops, "api_keys_create"))  # JSON-only operation: converted
    assert (as_json.media, as_json.data) == ("application/json", b'{"name": "x"}')
    with pytest.raises(RemoteError) as exc:
        read_body("{}", find(ops, "worksets_get"))
    assert exc.value.code == "BODY_NOT_ACCEPTED"
    with pytest.raises(RemoteError) as unreadable:
        read_body(f"@{tmp_path / 'nope.json'}", find(ops, "api_keys_create"))
    assert unreadable.value.code == "FILE_UNREADABLE" and "nope.json" in str(unreadable.value)


def test_a_redirect_is_not_followed_so_credentials_stay_with_their_server() -> None:
    import http.server
    import threading

    from stamen.remote.transport import send

    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/elsewhere")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        answer = send(
            "GET",
            f"http://127.0.0.1:{server.server_address[1]}/api/v1/worksets",
            headers={"Authorization": "Bearer secret"},
        )
    finally:
        server.shutdown()
    assert answer.status == 302 and seen == ["Bearer secret"]  # asked once, the Location never followed
